"""Cost of Compare Hypernets against the cells it draws, and against the naive graph.

    python bench/bench_compare.py [--repeats 3] [--skip-sd1]

Writes bench/results/compare_cpu.json and compare_cpu.md. A grid of K step files x C cells
(prompts x seeds, strength 1) is timed three ways in one process, interleaved, one intra-op thread:

- bare: K x C cells of KSampler + VAE Decode (the runtime's own nodes), with the base model loaded,
  each network already loaded and applied, and each prompt encoded once, all outside the timing.
  The KSampler calls alone are timed as well.
- grid: one Compare Hypernets call on the run's folder: it reads the step files, encodes the
  prompts, patches, samples, decodes, draws the labelled grid and writes its PNG and CSV.
- naive: the graph a user builds without it: for every cell its own Load Hypernet + Apply Hypernet
  + KSampler + VAE Decode chain (the prompts encoded once, as shared CLIPTextEncode nodes do).

The target (issue 18): grid / bare <= 1.15. Models: the built-in tiny model, and an SD1.5-size
UNet, VAE and text encoder with random weights (bench_train.sd15_components). CPU only: GPU figures
are not measured.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from _common import import_pack, write_results  # noqa: E402

PROMPTS = ["a red square on grey", "a blue circle, flat colours"]


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


class Contenders:
    """One model, a run folder of K step files, and the three ways to draw its K x C grid."""

    def __init__(self, objects: tuple, files: int, prompts: list[str], seeds: list[int], steps: int, px: int,
                 base: Path):
        from hypernet_studio.hypernet.file_format import load_hypernetwork
        from hypernet_studio.hypernet.patch import apply_hypernetwork
        from hypernet_studio.runtime import standins
        from hypernet_studio.runtime.examples import make_random_hypernetwork

        self.model, self.clip, self.vae = objects
        self.prompts, self.seeds, self.steps, self.px = prompts, seeds, steps, px
        run = base / "output" / "hypernet_training" / "bench"
        run.mkdir(parents=True, exist_ok=True)
        self.names = []
        for index in range(files):
            path = make_random_hypernetwork(run / f"bench-{(index + 1) * 500}.pt",
                                            sizes=self.model.attention_widths(), seed=index)
            self.names.append(f"bench/{path.name}")
        self.patched = [apply_hypernetwork(self.model, load_hypernetwork(run / Path(n).name), 1.0) for n in self.names]
        encode = standins.CLIPTextEncode().encode
        self.positives = [encode(self.clip, prompt)[0] for prompt in prompts]
        self.negative = encode(self.clip, "")[0]
        self.latent = standins.EmptyLatentImage().generate(px, px, 1)[0]
        self.standins = standins

    @property
    def cells(self) -> int:
        return len(self.names) * len(self.prompts) * len(self.seeds)

    def _cell(self, model: Any, positive: Any, seed: int, decode: bool = True) -> None:
        (latent,) = self.standins.KSampler().sample(model, seed, self.steps, 7.0, "euler", "normal", positive,
                                                    self.negative, self.latent)
        if decode:
            self.standins.VAEDecode().decode(self.vae, latent)

    def bare(self, decode: bool = True) -> None:
        for model in self.patched:
            for positive in self.positives:
                for seed in self.seeds:
                    self._cell(model, positive, seed, decode)

    def grid(self) -> None:
        from hypernet_studio.nodes.compare import CompareHypernetsNode

        widgets = dict(runs="bench", every_nth=1, hypernetwork_names="", strengths="1", prompts="\n".join(self.prompts),
                       negative="", seeds=", ".join(map(str, self.seeds)), sampler_name="euler", scheduler="normal",
                       steps=self.steps, cfg=7.0, width=self.px, height=self.px, transpose=False)
        out = CompareHypernetsNode().compare([self.model], [self.clip], [self.vae],
                                             **{k: [v] for k, v in widgets.items()})
        assert len(out["result"][1]) == self.cells

    def naive(self) -> None:
        from hypernet_studio.nodes.model import ApplyHypernetNode, LoadHypernetNode

        for name in self.names:
            for positive in self.positives:
                for seed in self.seeds:
                    (network,) = LoadHypernetNode().load(name)
                    (model,) = ApplyHypernetNode().apply(self.model, network, 1.0)
                    self._cell(model, positive, seed)


def bench_model(label: str, objects: tuple, files: int, prompts: list[str], seeds: list[int], steps: int, px: int,
                repeats: int) -> dict:
    from hypernet_studio.runtime.headless_host import HEADLESS

    with tempfile.TemporaryDirectory() as folder:
        HEADLESS.configure(base_dir=Path(folder), input_dir=None, output_dir=None, models_dir=None, temp_dir=None)
        contenders = Contenders(objects, files, prompts, seeds, steps, px, Path(folder))
        ways = {"bare": contenders.bare, "ksampler_only": lambda: contenders.bare(decode=False),
                "grid": contenders.grid, "naive": contenders.naive}
        for fn in ways.values():  # warm-up
            fn()
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        names = list(ways)
        for round_index in range(repeats):  # each round in another order, so a drifting load hits all alike
            for name in names[round_index % len(names):] + names[:round_index % len(names)]:
                times[name].append(_timed(ways[name]))
    row: dict[str, Any] = {"model": label, "px": px, "steps": steps, "files_K": files,
                           "cells_per_file_C": len(prompts) * len(seeds), "cells": contenders.cells,
                           "repeats": repeats}
    for clock, index in (("cpu", 0), ("wall", 1)):
        for name in ways:
            row[f"{name}_{clock}_s"] = round(statistics.median(t[index] for t in times[name]), 4)
        least = {name: min(t[index] for t in times[name]) for name in ways}
        for name in ("grid", "naive", "ksampler_only"):
            ratios = [t[index] / b[index] for t, b in zip(times[name], times["bare"])]
            row[f"{name}_over_bare_{clock}"] = round(statistics.median(ratios), 3)
            row[f"{name}_over_bare_{clock}_fastest"] = round(least[name] / least["bare"], 3)
        row[f"naive_over_grid_{clock}"] = round(statistics.median(
            n[index] / g[index] for n, g in zip(times["naive"], times["grid"])), 3)
        row[f"naive_over_grid_{clock}_fastest"] = round(least["naive"] / least["grid"], 3)
    print(row, flush=True)
    return row


def _markdown(report: dict) -> str:
    lines = ["# Compare Hypernets: CPU benchmark", "",
             f"Machine: {report['cpus']} CPUs, torch {report['torch']}, 1 thread, load average at start "
             f"{report['load_average']}. A grid of K step files x C cells (prompts x seeds, strength 1) drawn three "
             "ways in one process, interleaved: **bare** = K x C calls of KSampler + VAE Decode with everything "
             "loaded, applied and encoded beforehand; **grid** = one Compare Hypernets call (reads the files, "
             "encodes the prompts, samples, draws and saves the grid and its table); **naive** = one Load Hypernet "
             "+ Apply Hypernet + KSampler + VAE Decode chain per cell. Ratios are medians of per-round ratios. "
             "CPU = process CPU time (one intra-op thread: little affected by other jobs on this shared machine); "
             "wall time is shown too. GPU: not measured.", "",
             "Each ratio is given twice: the median of the per-round ratios, and (after the slash) the ratio "
             "of the fastest round of each, the one least disturbed by other jobs.", "",
             "| model | px | steps | K x C | rounds | clock | bare s | KSampler only s | grid s | naive s "
             "| grid / bare (target <= 1.15) | naive / bare | naive / grid |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        for clock in ("cpu", "wall"):
            def ratio(name: str, row: dict = row) -> str:
                return f"{row[name]} / {row[name + '_fastest']}"

            lines.append(f"| {row['model']} | {row['px']} | {row['steps']} | {row['files_K']} x "
                         f"{row['cells_per_file_C']} | {row['repeats']} | {clock} | {row[f'bare_{clock}_s']} | "
                         f"{row[f'ksampler_only_{clock}_s']} | {row[f'grid_{clock}_s']} | {row[f'naive_{clock}_s']} | "
                         f"{ratio(f'grid_over_bare_{clock}')} | {ratio(f'naive_over_bare_{clock}')} | "
                         f"{ratio(f'naive_over_grid_{clock}')} |")
    lines += ["", report["note"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sd1", action="store_true", help="only the tiny model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import_pack()
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    report: dict[str, Any] = {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                              "load_average": [round(x, 2) for x in os.getloadavg()], "rows": []}
    report["note"] = ("The grid's extra cost over bare is reading each file once, encoding the prompts once, one "
                      "ModelPatcher clone per line, and drawing and writing the grid; the naive graph reads and "
                      "applies its file once per cell. KSampler only is a part of bare, so its ratio to bare shows "
                      "the run's noise: where it is far from the decode's share, differences of that size between "
                      "grid and naive are not resolved.")
    with torch.inference_mode():
        tiny = headless_objects(build_tiny_components(seed=0))
        report["rows"].append(bench_model("tiny-sd (built-in)", tiny, 4, PROMPTS[:1], [1, 2], 10, 64, args.repeats))
        write_results("compare_cpu", report, _markdown(report))  # each row as soon as it is measured
        if not args.skip_sd1:
            from bench_train import sd15_components

            sd1 = headless_objects(sd15_components())
            report["rows"].append(bench_model("SD1.5-size (random weights)", sd1, 2, PROMPTS[:1], [1, 2], 4, 64,
                                              max(3, args.repeats // 2)))
            write_results("compare_cpu", report, _markdown(report))


if __name__ == "__main__":
    main()
