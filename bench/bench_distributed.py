"""Scaling figures without many GPUs: world size 1 against 2 on the CPU (gloo), the collective's
cost and volume per step, and an estimate for 2, 4 and 8 GPUs.

    python bench/bench_distributed.py [--steps 12]

Measured (torchrun on this machine, gloo over loopback, one thread per process):
- Train Hypernet's loop on the tiny model, the same global batch (4) on 1 and on 2 processes:
  seconds per optimizer step on rank 0, and the time rank 0 spends in the step's one all-reduce;
- the all-reduce of a buffer the size of an SD1.5 hypernetwork's gradients (1,2,1 on
  768/320/640/1280: the volume each process sends per optimizer step).
Estimated (labelled as such): the efficiency t / (t + c) of N GPUs, where t is one GPU's compute
per optimizer step (not measured: a range of t is shown) and c the
ring all-reduce time 2(N-1)/N x bytes / link bandwidth, at stated link speeds. The step's
all-reduce runs once per optimizer step, after the micro-batches, so gradient accumulation A
multiplies t. Writes bench/results/distributed_cpu.json and .md."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, import_pack, write_results

SD15_WIDTHS = (768, 320, 640, 1280)
# Effective bus bandwidths for an all-reduce (bytes/s), round figures from vendor specifications.
LINKS = {"NVLink (A100/H100 class, ~200 GB/s)": 200e9, "PCIe 4.0 x16 (~20 GB/s)": 20e9,
         "100 Gb Ethernet between machines (~11 GB/s)": 11e9, "10 Gb Ethernet between machines (~1.1 GB/s)": 1.1e9}
ASSUMED_GPU_STEP_S = (0.1, 0.25, 0.5)  # one GPU's compute per optimizer step (a range: not measured)


def sd15_gradient_count() -> int:
    """Parameters of a 1,2,1 hypernetwork on SD1.5's widths (each width: k and v, two Linears)."""
    return sum(2 * (2 * d * 2 * d + 2 * d + d) for d in SD15_WIDTHS)


# --------------------------------------------------------------------------- worker (under torchrun)
def worker(steps: int, out: Path) -> None:
    import torch.distributed as dist

    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components
    from hypernet_studio.hypernet.spec import HypernetSpec
    from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
    from hypernet_studio.hypernet.train.batches import prepare_examples
    from hypernet_studio.hypernet.train.config import TrainConfig, TrainHooks
    from hypernet_studio.hypernet.train.distributed import TrainingProcesses
    from hypernet_studio.hypernet.train.run import train_hypernetwork

    torch.set_num_threads(1)
    processes = TrainingProcesses.from_environment()
    world = processes.world_size if processes else 1
    collective: list[float] = []
    if processes is not None:
        original = TrainingProcesses.agree

        def timed(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                collective.append(time.perf_counter() - started)
        TrainingProcesses.agree = timed
    step_ends: list[float] = []

    class Clock(TrainHooks):
        def on_step(self, step, total, loss, learn_rate):
            step_ends.append(time.perf_counter())

    model, clip, vae = headless_objects(build_tiny_components())
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 64, 64, 3, generator=generator) for _ in range(8)]
    examples = prepare_examples(images, [f"shape {i}" for i in range(8)], resolution=64)
    network = Hypernetwork.build(HypernetSpec(sizes=model.attention_widths()), seed=0, name="dist")
    config = TrainConfig(name="dist", steps=steps, learning_rate="1e-5", batch_size=4 // world, csv_every=0,
                         save_every=0, preview_every=0, templates=["[filewords]"])
    train_hypernetwork(DiffusersBackend(model, clip, vae), network, examples, config, Clock(), processes=processes)
    record = {"world_size": world, "step_s": statistics.median(b - a for a, b in zip(step_ends[1:], step_ends[2:])),
              "gradient_count": sum(p.numel() for p in network.parameters())}
    if processes is not None:
        record["collective_s"] = statistics.median(collective[2:])
        buffer = torch.zeros(sd15_gradient_count() + 4)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            dist.all_reduce(buffer)
            timings.append(time.perf_counter() - started)
        record["sd15_all_reduce_s"] = statistics.median(timings)
    if processes is None or processes.rank == 0:
        out.write_text(json.dumps(record))


# --------------------------------------------------------------------------- driver
def launch(processes: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        link = Path(folder) / "hypernet_studio"
        link.symlink_to(REPO, target_is_directory=True)
        out = Path(folder) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": folder}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                        __file__, "--worker", str(out), "--steps", str(steps)], check=True, env=env, timeout=1800)
        return json.loads(out.read_text())


def estimate(bytes_per_step: float) -> list[dict]:
    rows = []
    for link, bandwidth in LINKS.items():
        for gpus in (2, 4, 8):
            seconds = 2 * (gpus - 1) / gpus * bytes_per_step / bandwidth
            rows.append({"link": link, "gpus": gpus, "all_reduce_s": seconds,
                         "efficiency": {str(t): round(t / (t + seconds), 3) for t in ASSUMED_GPU_STEP_S}})
    return rows


def markdown(report: dict) -> str:
    one, two = report["world_1"], report["world_2"]
    lines = ["# Distributed training: CPU measurements and a GPU estimate", "",
             f"Machine: {report['machine']}. torchrun, gloo over loopback, one thread per process.", "",
             "## Measured (tiny model, global batch 4)", "",
             "| processes | s/step (rank 0) | all-reduce s/step | gradients all-reduced |", "|---|---|---|---|",
             f"| 1 | {one['step_s']:.4f} | - | - |",
             f"| 2 | {two['step_s']:.4f} | {two['collective_s']:.4f} | {two['gradient_count']:,} |", "",
             f"Speed-up 1 -> 2 processes: {one['step_s'] / two['step_s']:.2f}x (2 CPU cores shared by both processes).",
             f"All-reduce of an SD1.5 hypernetwork's gradients ({report['sd15_gradient_count']:,} fp32, "
             f"{report['sd15_bytes'] / 1e6:.1f} MB) over gloo loopback: {two['sd15_all_reduce_s']:.3f} s.", "",
             "## Estimate (not measured)", "",
             f"Each process sends {report['sd15_bytes'] / 1e6:.1f} MB per optimizer step (SD1.5 hypernetwork, 1,2,1). "
             "Ring all-reduce time = 2(N-1)/N x bytes / bandwidth; efficiency = t / (t + all-reduce) for a GPU "
             "compute time t per optimizer step (gradient accumulation A multiplies t).", "",
             "| link | GPUs | all-reduce s | " + " | ".join(f"efficiency at t={t}s" for t in ASSUMED_GPU_STEP_S) + " |",
             "|---|---|---|" + "---|" * len(ASSUMED_GPU_STEP_S)]
    for row in report["estimate"]:
        lines.append(f"| {row['link']} | {row['gpus']} | {row['all_reduce_s']:.4f} | "
                     + " | ".join(str(row["efficiency"][str(t)]) for t in ASSUMED_GPU_STEP_S) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.worker)
        return
    import_pack()
    report = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, {platform.platform()}",
              "world_1": launch(1, args.steps), "world_2": launch(2, args.steps),
              "sd15_gradient_count": sd15_gradient_count()}
    report["sd15_bytes"] = 4 * report["sd15_gradient_count"]
    report["estimate"] = estimate(report["sd15_bytes"])
    write_results("distributed_cpu", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
