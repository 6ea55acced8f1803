"""VAE encodes and host memory under torchrun x2 (gloo, CPU): the processes share the encoding
(shared_encoding.py) against every process encoding every picture (as before issue 19).

    python bench/scale_torchrun_encoding.py [--quick]

Both runs train one step of the tiny model from the in-memory path (an IMAGE list made in code,
the same on both processes, as each process runs the whole workflow), without a latent cache.
Per process: the pictures its VAE encoded, its peak RSS (ru_maxrss) and its seconds from the
start of training to the end of step 1. The issue's target: VAE encodes in total = pictures.
Prints the figures as JSON; measure() gives them to bench/bench_dataset_scale.py."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, import_pack

FULL = {"pictures": 64, "source_px": 512, "resolution": 256}
QUICK = {"pictures": 16, "source_px": 256, "resolution": 128}


# --------------------------------------------------------------------------- worker (under torchrun)
def worker(out: Path, pictures: int, source_px: int, resolution: int, shared: bool) -> None:
    import torch

    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components
    from hypernet_studio.hypernet.spec import HypernetSpec
    from hypernet_studio.hypernet.train import latents as latents_module
    from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
    from hypernet_studio.hypernet.train.batches import prepare_examples
    from hypernet_studio.hypernet.train.config import TrainConfig, TrainHooks
    from hypernet_studio.hypernet.train.distributed import SingleProcess, TrainingProcesses
    from hypernet_studio.hypernet.train.run import train_hypernetwork

    torch.set_num_threads(1)
    processes = TrainingProcesses.from_environment()
    assert processes is not None, "run under torchrun"
    if not shared:  # as before: every process encodes every picture itself
        sharing = latents_module.encode_shared
        latents_module.encode_shared = lambda examples, indices, encode, _processes, chunk=4: sharing(
            examples, indices, encode, SingleProcess(), chunk)

    class Clock(TrainHooks):
        def __init__(self) -> None:
            self.first_step = 0.0

        def on_step(self, step, total, loss, learn_rate):
            self.first_step = self.first_step or time.perf_counter()

    model, clip, vae = headless_objects(build_tiny_components())
    backend = DiffusersBackend(model, clip, vae)
    encoded = [0]
    encode_images = backend.encode_images

    def counting(pixels):
        encoded[0] += pixels.shape[0]
        return encode_images(pixels)

    backend.encode_images = counting
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, source_px, source_px, 3, generator=generator) for _ in range(pictures)]
    clock = Clock()
    started = time.perf_counter()
    examples = prepare_examples(images, [f"picture {i}" for i in range(pictures)], resolution=resolution)
    network = Hypernetwork.build(HypernetSpec(sizes=model.attention_widths()), seed=0, name="share")
    config = TrainConfig(name="share", steps=1, learning_rate="1e-5", batch_size=1, csv_every=0, save_every=0,
                         preview_every=0, templates=["[filewords]"], latent_sampling="deterministic")
    train_hypernetwork(backend, network, examples, config, clock, processes=processes)
    record = {"rank": processes.rank, "vae_encodes": encoded[0],
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "seconds_to_step_1": clock.first_step - started}
    (out / f"rank-{processes.rank}.json").write_text(json.dumps(record))


# --------------------------------------------------------------------------- driver
def launch(settings: dict, shared: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        link = Path(folder) / "hypernet_studio"
        link.symlink_to(REPO, target_is_directory=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": folder}
        arguments = [str(settings[key]) for key in ("pictures", "source_px", "resolution")]
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        __file__, "--worker", folder, *arguments, "shared" if shared else "every"],
                       check=True, env=env, timeout=1800, capture_output=True)
        ranks = [json.loads((Path(folder) / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    return {"vae_encodes_per_process": [r["vae_encodes"] for r in ranks],
            "vae_encodes_total": sum(r["vae_encodes"] for r in ranks),
            "peak_rss_mib_per_process": [round(r["peak_rss_mib"], 1) for r in ranks],
            "seconds_to_step_1_per_process": [round(r["seconds_to_step_1"], 2) for r in ranks]}


def measure(quick: bool = False) -> dict:
    """VAE encodes, peak RSS and time to step 1 per process, torchrun x2 on the CPU, sharing the
    encoding ("shared") against every process encoding everything ("every_process_encodes_all")."""
    settings = QUICK if quick else FULL
    shared, every = launch(settings, shared=True), launch(settings, shared=False)
    return {**settings, "processes": 2, "backend": "gloo (CPU), one thread per process",
            "shared": shared, "every_process_encodes_all": every,
            "encodes_total_equals_pictures": shared["vae_encodes_total"] == settings["pictures"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller pictures")
    parser.add_argument("--worker", nargs=5, metavar=("OUT", "PICTURES", "SOURCE_PX", "RESOLUTION", "MODE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        out, pictures, source_px, resolution, mode = args.worker
        worker(Path(out), int(pictures), int(source_px), int(resolution), mode == "shared")
        return
    import_pack()
    print(json.dumps(measure(args.quick), indent=2))


if __name__ == "__main__":
    main()
