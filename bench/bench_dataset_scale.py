"""Big picture sets, measured in one run (CPU, headless): peak memory against picture count, the
latent cache, the encoding under torchrun and prep throughput against workers.

    python bench/bench_dataset_scale.py [--quick] [--only folder cache torchrun workers chunks]

Each part lives in its own bench/scale_*.py (one job per file) and is run here in a fresh child
process, one after the other, so no part's memory or threads disturb the next. Each part compares
within itself (folder against in-memory, warm against cold, N workers against one), measured in
the same run; `--only` re-measures some parts and keeps the others' last figures, each with its
own date and the machine's load average, since the timing parts need a quiet machine:
- scale_folder_training: peak RSS of training from a folder vs the in-memory IMAGE list;
- scale_chunked_prep: peak RSS of a chunked Load Images -> Auto Crop -> Save Dataset vs the count;
- scale_cache: time before step 1 with a warm latent cache vs a cold one;
- scale_torchrun_encoding: VAE encodes under torchrun x2 (gloo) and peak RSS per process;
- scale_prep_workers: Load Images + focal Auto Crop throughput against the worker count.
Writes bench/results/dataset_scale_cpu.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from _common import REPO, RESULTS, write_results

PARTS = {
    "folder": ("scale_folder_training", "Training from a folder"),
    "chunks": ("scale_chunked_prep", "Preparing a big folder in chunks"),
    "cache": ("scale_cache", "The latent cache"),
    "torchrun": ("scale_torchrun_encoding", "Encoding under torchrun"),
    "workers": ("scale_prep_workers", "Prep on every core"),
}


def run_part(module: str, quick: bool) -> dict:
    """One part's measure() in a fresh interpreter; its JSON report."""
    code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import {module}; "
            f"print('@@' + json.dumps({module}.measure(quick={quick!r})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO / "bench", capture_output=True, text=True,
                          check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{module} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][2:])


def headline(key: str, part: dict) -> str:
    """The part's figure against its target, in one sentence."""
    if key == "folder":
        return (f"Training from a folder: peak RSS grows {part['folder_mb_per_added_picture']} MB per added picture "
                f"(target <= {part['target_mb_per_added_picture']}); the in-memory path "
                f"{part['in_memory_mb_per_added_picture']} MB.")
    if key == "chunks":
        return (f"Chunked prep: peak RSS at the largest count / at the smallest = {part['chunked_ratio']} "
                f"(target <= {part['target_ratio']}).")
    if key == "cache":
        return (f"Latent cache: time before step 1 with a warm cache / cold = {part['hit_over_cold']} with an "
                f"SD1.5-size VAE (target <= {part['target_hit_over_cold']}); "
                f"{part['hit_over_cold_tiny_vae']} with the tiny model's almost free VAE.")
    if key == "torchrun":
        shared = part["shared"]
        return (f"torchrun x2: VAE encodes in total {shared['vae_encodes_total']} for {part['pictures']} pictures "
                f"(every process encoding everything: {part['every_process_encodes_all']['vae_encodes_total']}).")
    return (f"Prep on every core: Load Images + focal Auto Crop, {part['machine']['cores']} workers against 1: "
            f"{part['speedup']}x as fast (target >= 1.7).")


def markdown(report: dict) -> str:
    lines = ["# Big picture sets (CPU, headless)", "",
             f"Machine: {report['machine']}; {report['cpus']} CPUs; torch {report['torch']}. GPU: not measured "
             "(no GPU was lent).", ""]
    for key, (_, title) in PARTS.items():
        if key not in report["parts"]:
            continue
        part, when = report["parts"][key], report["when"][key]
        lines += [f"## {title}", "", f"- {headline(key, part)}",
                  f"- Measured {when['date']}, load average {when['load']} before it, {when['seconds']:.0f} s"
                  f"{' (quick)' if when['quick'] else ''}.", "", "```json", json.dumps(part, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, to check the bench runs")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), default=list(PARTS))
    args = parser.parse_args()
    import torch

    previous = RESULTS / "dataset_scale_cpu.json"
    report = json.loads(previous.read_text()) if previous.exists() else {"parts": {}, "when": {}}
    report.update({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "torch": torch.__version__})
    for key in args.only:
        print(f"{key} ...", flush=True)
        load, start = os.getloadavg()[0], time.perf_counter()
        report["parts"][key] = run_part(PARTS[key][0], args.quick)
        report["when"][key] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": round(load, 1),
                               "seconds": time.perf_counter() - start, "quick": args.quick}
        print(headline(key, report["parts"][key]), flush=True)
        write_results("dataset_scale_cpu", report, markdown(report))


if __name__ == "__main__":
    main()
