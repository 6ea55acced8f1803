"""Memory over a long training run: RSS sampled every N steps on the tiny model (CPU).

    python bench/bench_long_run_memory.py [--steps 2000] [--every 100]

Writes bench/results/long_run_memory_cpu.json and .md: RSS after every `every` steps of a training
run on the tiny model (64 px, CSV row every step, a step file every 500 steps), once through the
training loop alone and once through the shipped workflow in the headless runtime, and the growth
per step over each run's second half (after allocator warm-up). A flat run grows by well under a
kilobyte per step.
"""
from __future__ import annotations

import argparse
import gc
import platform
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, import_pack, status_mib, write_results


def run(steps: int, every: int) -> list[tuple[int, float]]:
    """(step, RSS MiB) every `every` steps of one run."""
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components
    from hypernet_studio.hypernet.spec import HypernetSpec
    from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
    from hypernet_studio.hypernet.train.batches import prepare_examples
    from hypernet_studio.hypernet.train.config import TrainConfig, TrainHooks
    from hypernet_studio.hypernet.train.run import train_hypernetwork

    samples: list[tuple[int, float]] = []

    class Sampler(TrainHooks):
        def on_step(self, step, total, loss, learn_rate):
            if step % every == 0:
                gc.collect()
                samples.append((step, status_mib("VmRSS")))

    model, clip, vae = headless_objects(build_tiny_components())
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 64, 64, 3, generator=generator) for _ in range(4)]
    examples = prepare_examples(images, ["red, square", "blue, circle", "green", "yellow"], resolution=64)
    network = Hypernetwork.build(HypernetSpec(sizes=model.attention_widths()), seed=0, name="long")
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(name="long", steps=steps, learning_rate="1e-5", csv_every=1, save_every=500,
                             preview_every=0, log_dir=Path(folder) / "log", final_path=Path(folder) / "long.pt",
                             templates=["[filewords]"])
        with torch.inference_mode(False):
            train_hypernetwork(DiffusersBackend(model, clip, vae), network, examples, config, Sampler())
    return samples


def run_workflow(steps: int, every: int) -> list[tuple[int, float]]:
    """The same measurement through the headless runtime: workflows/train_hypernet.json, its
    Train Hypernet node reporting progress and live-chart events as it does in a CLI run."""
    from hypernet_studio.runtime.api import run_workflow_file
    from hypernet_studio.runtime.examples import write_examples

    samples: list[tuple[int, float]] = []

    def on_event(event: str, data: dict) -> None:
        if event == "progress" and data.get("node") == "4" and data["value"] % every == 0:
            if not samples or samples[-1][0] != data["value"]:
                gc.collect()
                samples.append((data["value"], status_mib("VmRSS")))

    overrides = {"4.steps": steps, "4.csv_every": 1, "4.save_every": 500, "4.preview_every": 0,
                 "4.learning_rate": "1e-5", "9.steps": 1}
    with tempfile.TemporaryDirectory() as base:
        write_examples(Path(base))
        run_workflow_file(REPO / "workflows" / "train_hypernet.json", overrides, base_dir=base,
                          event_callback=on_event)
    return samples


def _growth_kib_per_step(samples: list[tuple[int, float]], steps: int) -> float:
    half = [s for s in samples if s[0] >= steps // 2]
    return (half[-1][1] - half[0][1]) * 1024 / max(1, half[-1][0] - half[0][0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    args = parser.parse_args()
    import_pack()
    torch.set_num_threads(1)
    started = time.perf_counter()
    library = run(args.steps, args.every)
    runtime = run_workflow(args.steps, args.every)
    report = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "steps": args.steps, "seconds": round(time.perf_counter() - started, 1),
              "library_rss_mib": [[step, round(rss, 1)] for step, rss in library],
              "workflow_rss_mib": [[step, round(rss, 1)] for step, rss in runtime],
              "library_growth_kib_per_step": round(_growth_kib_per_step(library, args.steps), 3),
              "workflow_growth_kib_per_step": round(_growth_kib_per_step(runtime, args.steps), 3)}
    lines = ["# RSS over a long training run (CPU, tiny model, 64 px, CSV row every step)", "",
             f"{args.steps} steps, twice: the training loop alone, then workflows/train_hypernet.json through the "
             f"headless runtime ({report['seconds']} s in all). Growth per step over the second half: "
             f"{report['library_growth_kib_per_step']} KiB (loop), {report['workflow_growth_kib_per_step']} KiB "
             "(workflow).", "", "| step | loop RSS MiB | workflow RSS MiB |", "|---|---|---|"]
    lines += [f"| {a[0]} | {a[1]:.1f} | {b[1]:.1f} |" for a, b in zip(library, runtime)]
    write_results("long_run_memory_cpu", report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
