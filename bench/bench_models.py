"""Cost of the headless model layer, each figure a ratio against a floor measured in the same run.

    python bench/bench_models.py [--repeats 5] [--threads N]

Writes bench/results/models_cpu.json (and prints it):

1. UNet call (tiny model, 64x64 px, batch 2 as with cfg): diffusers' stock AttnProcessor2_0
   (the floor) vs our PatchableAttnProcessor with no patch, and with one identity patch on
   attn1 and attn2 (the dispatch cost of the patch contract).
2. 8-step euler txt2img sampling on the tiny model: our k-diffusion-style loop vs the same
   UNet driven by diffusers' EulerDiscreteScheduler (the peer), and vs the floor of 8 bare
   batched UNet calls (the sampler's own overhead).
3. Building the tiny model in-process (cold), and the README's main command
   (`python -m hypernet_studio.runtime.cli run workflows/txt2img.json`) as a fresh process,
   which includes importing torch/diffusers/transformers.

CPU only: GPU figures are not measured. On a shared, busy CPU
use --threads 1: the tiny model's ops are too small for threads, and OpenMP's spinning
threads then dominate (the CLI figure runs with torch's default threads and includes ~5-12 s
of importing torch/diffusers/transformers).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, import_pack, median_seconds  # noqa: E402

RESULTS = REPO / "bench" / "results" / "models_cpu.json"


def bench_unet_call(components, repeats: int) -> dict:
    import copy

    from diffusers.models.attention_processor import AttnProcessor2_0

    from hypernet_studio.hypernet.sd.headless import HeadlessModel

    model = HeadlessModel(components)
    stock = copy.deepcopy(components.unet)
    stock.set_attn_processor(AttnProcessor2_0())
    patched = model.clone()
    patched.set_model_attn1_patch(lambda q, k, v, extra: (q, k, v))
    patched.set_model_attn2_patch(lambda q, k, v, extra: (q, k, v))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, components.context_dim, generator=generator)
    with torch.inference_mode():
        floor = median_seconds(lambda: stock(x, t, encoder_hidden_states=context), repeats)
        ours = median_seconds(lambda: model.apply_model(x, t, context), repeats)
        with_patch = median_seconds(lambda: patched.apply_model(x, t, context), repeats)
    return {"ms_stock_processor": round(floor * 1e3, 3), "ms_ours_no_patch": round(ours * 1e3, 3),
            "ms_ours_identity_patches": round(with_patch * 1e3, 3),
            "ratio_no_patch": round(ours / floor, 3), "ratio_identity_patches": round(with_patch / floor, 3)}


def bench_sampling(components, repeats: int, steps: int = 8, cfg: float = 7.0) -> dict:
    from diffusers import EulerDiscreteScheduler

    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.sampling import sample

    model, clip, _ = headless_objects(components)
    with torch.inference_mode():
        positive = clip.encode_from_tokens(clip.tokenize("a lighthouse at dusk"))
        negative = clip.encode_from_tokens(clip.tokenize("blurry"))
    latent = torch.zeros(1, 4, 8, 8)

    def ours():
        return sample(model, latent, positive, negative, seed=0, steps=steps, cfg=cfg, sampler_name="euler",
                      scheduler="normal")

    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       timestep_spacing="linspace")
    contexts = torch.cat([positive, negative])

    def peer():
        scheduler.set_timesteps(steps)
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(torch.cat([x, x]), t)
            cond, uncond = components.unet(x_in, t, encoder_hidden_states=contexts).sample.chunk(2)
            x = scheduler.step(uncond + cfg * (cond - uncond), t, x).prev_sample
        return x

    x2 = torch.zeros(2, 4, 8, 8)
    t2 = torch.tensor([500.0, 500.0])

    def floor():
        for _ in range(steps):
            model.apply_model(x2, t2, contexts)

    with torch.inference_mode():
        seconds_ours = median_seconds(ours, repeats)
        seconds_peer = median_seconds(peer, repeats)
        seconds_floor = median_seconds(floor, repeats)
    return {"steps": steps, "cfg": cfg, "seconds_ours": round(seconds_ours, 4),
            "seconds_diffusers_euler_scheduler": round(seconds_peer, 4),
            "seconds_bare_unet_calls": round(seconds_floor, 4),
            "ratio_vs_diffusers_scheduler": round(seconds_ours / seconds_peer, 3),
            "ratio_vs_bare_unet_calls": round(seconds_ours / seconds_floor, 3)}


def bench_build_and_cli() -> dict:
    from hypernet_studio.hypernet.sd import tiny

    start = time.perf_counter()
    tiny._build(123)
    build = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as base:
        command = [sys.executable, "-m", "hypernet_studio.runtime.cli", "run", str(REPO / "workflows" / "txt2img.json"),
                   "--output-dir", str(Path(base) / "output"), "--models-dir", str(Path(base) / "models"),
                   "--input-dir", str(Path(base) / "input")]
        start = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, cwd=str(REPO.parent))
        cli = time.perf_counter() - start
        images = sorted(p.name for p in (Path(base) / "output").glob("*.png"))
    return {"seconds_tiny_build_cold": round(build, 3), "seconds_readme_main_command": round(cli, 2),
            "cli_exit_code": completed.returncode, "cli_images": images,
            "cli_stderr_tail": completed.stderr[-300:] if completed.returncode else ""}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import_pack()
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    components = build_tiny_components()
    results = {
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": "cpu",
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "note": "CPU only; GPU figures are not measured. Ratios compare against a floor/peer in the same run.",
        "unet_call_tiny_64px_batch2": bench_unet_call(components, args.repeats),
        "txt2img_sampling_tiny_64px": bench_sampling(components, args.repeats),
        "build_and_cli": bench_build_and_cli(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
