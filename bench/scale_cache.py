"""The persistent latent cache: a run's time before its first step when the cache has every
picture (a hit) against the run that filled it (cold), and against no cache at all.

    python bench/scale_cache.py [--quick]

One process trains one step of the tiny model (once with its own VAE, once with an SD1.5-shaped
VAE in its place) from the in-memory path (an IMAGE list made in
code) three times: with the cache off, cold (an empty cache folder), and again (every picture
and prompt a hit). "Before step 1" is from run_training's call to the start of step 1, so it
holds the pictures' resize to their buckets (prepare_examples, the in-memory path's own cost, the
same in every run: `resize_seconds` alone), the pixel hashes, the weights' hashes (once per
model object: the warm-up run pays them), the encoding or the cache look-up, and the network and
optimizer. The issue's target: hit <= 10 % of cold. `memory`: the anonymous memory that 2,000
SD-sized latents take held in memory, against memory-mapped from the cache (a stand-in VAE).
Prints the figures as JSON; measure() gives them to bench/bench_dataset_scale.py."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import import_pack

FULL = {"pictures": 200, "source_px": 256, "resolution": 256}
QUICK = {"pictures": 24, "source_px": 128, "resolution": 128}


def _pictures(count: int, side: int) -> tuple[list, list[str]]:
    """Smooth random pictures (a blurred noise field, as photos are smoother than white noise)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    images = []
    for _ in range(count):
        coarse = torch.rand(1, 3, side // 16, side // 16, generator=generator)
        image = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
        images.append(image.clamp(0, 1).movedim(1, -1).contiguous())
    return images, [f"picture {i % 7}, tag{i % 3}" for i in range(count)]


def _timed_run(objects: tuple, images: list, captions: list[str], resolution: int, cache_dir) -> dict:
    """Seconds from run_training's call to the start of step 1 (TrainingRun.optimizer_step's first
    call, wrapped here), and what the cache reported."""
    from hypernet_studio.hypernet.spec import HypernetSpec
    from hypernet_studio.hypernet.train.config import TrainConfig
    from hypernet_studio.hypernet.train.run import TrainingRun
    from hypernet_studio.hypernet.train.session import TrainingData, run_training

    marks: list[float] = []
    original = TrainingRun.optimizer_step

    def marked(self, learn_rate):
        marks.append(time.perf_counter())
        return original(self, learn_rate)

    config = TrainConfig(name="bench", steps=1, learning_rate="0.0001", templates=["a [filewords]"], csv_every=0,
                         save_every=0, preview_every=0, resolution=resolution, cache_dir=cache_dir)
    TrainingRun.optimizer_step = marked
    try:
        start = time.perf_counter()
        outputs = run_training(*objects, TrainingData(images, captions), config, spec=HypernetSpec(sizes=None))
    finally:
        TrainingRun.optimizer_step = original
    cache = outputs.result.cache
    return {"seconds_before_step_1": round(marks[0] - start, 3), "cache": cache.line() if cache is not None else None}


def _resize_seconds(images: list, captions: list[str], resolution: int) -> float:
    from hypernet_studio.hypernet.train.batches import prepare_examples

    start = time.perf_counter()
    prepare_examples(images, captions, resolution=resolution)
    return round(time.perf_counter() - start, 3)


def _memory_case(case: str, count: int, folder: Path) -> float:
    """MiB of anonymous (not file-backed) memory a LatentCache of `count` SD-sized latents (4x64x64,
    mean and std, a stand-in encoder) adds: held in memory ("encoded"), written to an empty cache
    and read back ("cold"), or all cache hits ("hit", memory-mapped: the pages stay in the file
    until a batch reads them). Run in a fresh process per case, so no case reuses another's memory."""
    import torch
    from _common import status_mib

    from hypernet_studio.hypernet.train.batches import TrainingExample
    from hypernet_studio.hypernet.train.encoding_cache import EncodingCache
    from hypernet_studio.hypernet.train.latents import LatentCache

    examples = []
    for index in range(count):  # distinct 8x8 pictures: the stand-in VAE spreads each to 64x64
        pixels = torch.full((1, 8, 8, 3), index / count)
        pixels[0, 0, 0, 0] = float(index)
        examples.append(TrainingExample(pixels, f"p{index}"))

    def encode(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = pixels.movedim(-1, 1).repeat(1, 2, 8, 8)[:, :4]
        return mean, mean.abs() + 0.1

    cache = None if case == "encoded" else EncodingCache(folder, 10**12, "vae", None)
    before = status_mib("RssAnon")
    latents = LatentCache(examples, encode, "random", 0, torch.device("cpu"), cache=cache)
    grown = status_mib("RssAnon") - before
    del latents
    return round(grown, 1)


def _anonymous_memory_growth(count: int, folder: Path) -> dict:
    """_memory_case for each case, each in a process of its own (cold fills the cache hit reads)."""
    import os
    import subprocess
    import sys

    growth = {}
    for case in ("encoded", "cold", "hit"):
        command = [sys.executable, __file__, "--memory-case", case, "--count", str(count), "--folder", str(folder)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=dict(os.environ))
        growth[case] = float(done.stdout.strip().splitlines()[-1])
    return {"latents": count, "latent_shape": [4, 64, 64], "rss_anon_growth_mib": growth}


def _sd15_size_vae():
    """An SD1.5-shaped VAE with random weights (no download): the encoder a real run pays for."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512)
    return vae.eval().requires_grad_(False)


def _off_cold_hit(objects: tuple, images: list, captions: list[str], resolution: int) -> dict:
    _timed_run(objects, images[:2], captions[:2], resolution, None)  # warm-up: first-call costs, weight hashes
    with tempfile.TemporaryDirectory() as folder:
        off = _timed_run(objects, images, captions, resolution, None)
        cold = _timed_run(objects, images, captions, resolution, Path(folder))
        hit = _timed_run(objects, images, captions, resolution, Path(folder))
    return {"off": off, "cold": cold, "hit": hit,
            "hit_over_cold": round(hit["seconds_before_step_1"] / cold["seconds_before_step_1"], 3)}


def measure(quick: bool = False) -> dict:
    """Seconds before step 1 with the cache off, cold and hit, and the hit/cold ratio (CPU): with
    the tiny model's own VAE (whose encode costs almost nothing, so fixed costs dominate) and with
    an SD1.5-shaped VAE in its place (what a real checkpoint's encode costs; the target's case)."""
    import dataclasses

    import_pack()
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    settings = QUICK if quick else FULL
    components = build_tiny_components(seed=0)
    images, captions = _pictures(settings["pictures"], settings["source_px"])
    tiny = _off_cold_hit(headless_objects(components), images, captions, settings["resolution"])
    sd_vae = _off_cold_hit(headless_objects(dataclasses.replace(components, vae=_sd15_size_vae())), images, captions,
                           settings["resolution"])
    with tempfile.TemporaryDirectory() as folder:
        memory = _anonymous_memory_growth(200 if quick else 2000, Path(folder))
    return {**settings, "model": "tiny (UNet, CLIP)", "device": "cpu", "tiny_vae": tiny, "sd15_size_vae": sd_vae,
            "resize_seconds": _resize_seconds(images, captions, settings["resolution"]),
            "hit_over_cold": sd_vae["hit_over_cold"], "hit_over_cold_tiny_vae": tiny["hit_over_cold"],
            "target_hit_over_cold": 0.10, "memory": memory}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small pictures (a smoke run)")
    parser.add_argument("--memory-case", choices=("encoded", "cold", "hit"), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=2000, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.memory_case:
        import_pack()
        print(_memory_case(arguments.memory_case, arguments.count, arguments.folder))
    else:
        print(json.dumps(measure(quick=arguments.quick), indent=1))
