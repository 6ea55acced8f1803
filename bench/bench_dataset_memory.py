"""Peak memory against dataset size: Load Images -> Auto Crop -> Train Hypernet, headless (CPU).

    python bench/bench_dataset_memory.py [--counts 25 50 100] [--max-sides 0 1536]

Writes synthetic photo-like JPEGs (2309x1732, 4 MP) to a temporary input folder, then runs, in a
fresh child process per point, the graph Load Images (limit N, max_side S) -> Auto Crop (center,
512x512) -> Train Hypernet (built-in tiny model, 64 px, 2 steps) through the headless runtime's
executor and reads the child's peak RSS (VmHWM in /proc/self/status). The per-picture cost is the
least-squares slope of peak RSS over N, for each max_side (0 = full size, the old behaviour;
1024, the default and 2048 unless --max-sides says otherwise).
Writes bench/results/dataset_memory_cpu.json and .md.
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

from _common import REPO, import_pack, status_mib, write_results

FOLDER = "bench_photos"


def write_photos(folder: Path, count: int, width: int, height: int) -> float:
    """`count` different photo-like JPEGs (gradients, texture, noise; quality 90); their MB on disk."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([255 * x / width, 255 * y / height, 128 + 90 * np.sin(x / 23.0) * np.cos(y / 31.0)], -1)
    noise = np.random.default_rng(0).normal(0, 8, base.shape).astype(np.float32)
    total = 0
    for index in range(count):
        tint = np.array([(index * 37) % 64, (index * 53) % 64, (index * 71) % 64], np.float32)
        pixels = np.clip(np.roll(base, index * 97, axis=1) + np.roll(noise, index * 13, axis=0) + tint - 32, 0, 255)
        path = folder / f"photo_{index:04d}.jpg"
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    return total / 2**20


def prompt(count: int, max_side: int, crop: int, steps: int) -> dict:
    """workflows/train_hypernet.json as an API prompt, its sampling nodes dropped and Auto Crop
    put between Load Images and Train Hypernet."""
    from hypernet_studio.runtime.registry import build_registry
    from hypernet_studio.runtime.workflow import load_workflow

    registry = build_registry(include_standins=True)[0]
    full, _ = load_workflow(REPO / "workflows" / "train_hypernet.json", registry)
    graph = {key: full[key] for key in ("1", "2", "3", "4")}
    graph["2"]["inputs"].update(folder=FOLDER, limit=count, max_side=max_side)
    declared = registry["HN_AutoCrop"].INPUT_TYPES()["required"]
    crop_inputs = {name: spec[1]["default"] for name, spec in declared.items() if "default" in spec[1]}
    crop_inputs.update(method="center", width=crop, height=crop, face_weight=0.0,
                       images=["2", 0], masks=["2", 1], captions=["2", 2], stems=["2", 3])
    graph["5"] = {"class_type": "HN_AutoCrop", "inputs": crop_inputs}
    graph["4"]["inputs"].update(images=["5", 0], masks=["5", 1], captions=["5", 2], steps=steps, save_every=0,
                                preview_every=0, csv_every=1, name="bench-memory", overwrite=True)
    return graph


def child(base: Path, count: int, max_side: int, crop: int, steps: int) -> None:
    """One point, in this (fresh) process: run the graph, print peak RSS and timings as JSON."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    from hypernet_studio.runtime.api import run_prompt

    before = status_mib("VmHWM")
    result = run_prompt(prompt(count, max_side, crop, steps), base_dir=base)
    print(json.dumps({"count": count, "max_side": max_side, "peak_rss_mib": round(status_mib("VmHWM"), 1),
                      "peak_before_run_mib": round(before, 1), "seconds": round(time.perf_counter() - started, 1),
                      "executed": result.executed}))


def run_point(base: Path, count: int, max_side: int, crop: int, steps: int) -> dict:
    command = [sys.executable, __file__, "--child", str(base), "--count", str(count), "--max-side", str(max_side),
               "--crop", str(crop), "--steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"point N={count} max_side={max_side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def slope(points: list[dict]) -> tuple[float, float]:
    """Least-squares (MiB per picture, intercept MiB) of peak RSS over the picture count."""
    xs, ys = [p["count"] for p in points], [p["peak_rss_mib"] for p in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    gradient = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return gradient, mean_y - gradient * mean_x


def machine() -> str:
    """CPU model, core count and memory, from /proc (Linux)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    memory = next(int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return f"{cpu}, {os.cpu_count()} CPUs, {memory:.0f} GiB RAM, {platform.system()}, CPU only (no GPU)"


def report(points: list[dict], args: argparse.Namespace, disk_mib: float, seconds: float) -> dict:
    import torch
    from PIL import Image

    settings = {}
    for max_side in args.max_sides:
        series = [p for p in points if p["max_side"] == max_side]
        per_picture, intercept = slope(series)
        settings[str(max_side)] = {"points": series, "mib_per_picture": round(per_picture, 1),
                                   "intercept_mib": round(intercept, 1)}
    return {"machine": machine(),
            "python": platform.python_version(), "torch": torch.__version__, "pillow": Image.__version__,
            "pictures": f"{args.width}x{args.height} JPEG (quality 90), {disk_mib / max(args.counts):.2f} MiB each",
            "graph": f"Load Images (limit N, max_side S) -> Auto Crop (center, {args.crop}x{args.crop}) -> "
                     f"Train Hypernet (tiny-sd (built-in), 64 px, {args.steps} steps)",
            "counts": args.counts, "default_max_side": args.default, "seconds": round(seconds, 1),
            "by_max_side": settings}


def markdown(result: dict) -> str:
    lines = ["# Peak memory against dataset size (CPU, headless)", "",
             f"Machine: {result['machine']}; torch {result['torch']}, Pillow {result['pillow']}.",
             f"Pictures: {result['pictures']}.", f"Graph: {result['graph']}.",
             f"One fresh process per point; peak RSS is the child's VmHWM. Whole run: {result['seconds']} s.", "",
             "| max_side | " + " | ".join(f"{n} pictures" for n in result["counts"]) + " | MiB per picture |",
             "|---" * (len(result["counts"]) + 2) + "|"]
    for max_side, setting in result["by_max_side"].items():
        label = "0 (full size, as before; A1111)" if max_side == "0" else \
            f"{max_side} (default)" if int(max_side) == result["default_max_side"] else max_side
        peaks = " | ".join(f"{p['peak_rss_mib']:.0f} MiB" for p in setting["points"])
        lines.append(f"| {label} | {peaks} | {setting['mib_per_picture']:.1f} |")
    lines += ["", "MiB per picture is the least-squares slope of peak RSS over the picture count."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--max-sides", type=int, nargs="+", default=None)
    parser.add_argument("--width", type=int, default=2309)
    parser.add_argument("--height", type=int, default=1732)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-side", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import_pack()
    if args.child is not None:
        child(args.child, args.count, args.max_side, args.crop, args.steps)
        return
    from hypernet_studio.hypernet.preprocess.image_folder import MAX_SIDE_DEFAULT

    args.max_sides = args.max_sides or sorted({0, 1024, MAX_SIDE_DEFAULT, 2048})
    args.default = MAX_SIDE_DEFAULT
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as base:
        disk = write_photos(Path(base) / "input" / FOLDER, max(args.counts), args.width, args.height)
        points = []
        for max_side in args.max_sides:
            for count in args.counts:
                points.append(run_point(Path(base), count, max_side, args.crop, args.steps))
                print(json.dumps(points[-1]), flush=True)
    result = report(points, args, disk, time.perf_counter() - started)
    write_results("dataset_memory_cpu", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
