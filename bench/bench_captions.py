"""Time of the caption nodes (Tag Statistics, Edit Tags, Filter by Tags) on a 1,000-caption list.

    python bench/bench_captions.py [--captions 1000] [--repeats 5]

Builds a seeded, booru-like caption list (a Zipf-distributed vocabulary of 600 tags, 15-45 tags per
caption, some weighted, some with escaped brackets, a few text/watermark tags) with one small
picture per caption, then calls each node's function as ComfyUI does (one call with whole lists,
headless host). Reported: the first call in this process, which for Tag Statistics includes
building the CLIP tokenizer from the bundled vocabulary and importing matplotlib (once per process;
importing transformers is timed apart, as ComfyUI has it loaded from startup), and the median of
--repeats calls after it. The target is under 1 s per node on 1,000 captions.

Writes bench/results/captions_cpu.json and .md. CPU only: these nodes do not use a GPU.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time

from _common import import_pack, write_results

RULES = """remove: watermark, text, signature
replace: 1girl -> woman
regex: ^(.*) hair$ -> \\1-hair
prepend: mystyle
dedupe
sort: count
"""
EXPRESSION = "NOT (text OR watermark OR signature) AND (1girl OR solo OR NOT monochrome)"
TARGET_S = 1.0


def make_captions(count: int, seed: int = 0) -> list[str]:
    """Booru-like captions: frequent tags often, rare ones seldom; weights and escapes here and there."""
    rng = random.Random(seed)
    colours = ["red", "blue", "green", "black", "white", "blonde", "brown", "pink", "purple", "silver"]
    vocabulary = ["1girl", "solo", "monochrome", "hat \\(object\\)"]
    vocabulary += [f"{colour} hair" for colour in colours] + [f"{colour} eyes" for colour in colours]
    vocabulary += [f"tag{index} detail" for index in range(597 - len(vocabulary))]
    vocabulary[120:120] = ["text", "watermark", "signature"]  # rare: a few pictures in a hundred
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    captions = []
    for _ in range(count):
        tags = rng.choices(vocabulary, weights, k=rng.randint(15, 45))
        tags = [f"({tag}:{rng.choice(['1.1', '1.2', '0.9'])})" if rng.random() < 0.05 else tag for tag in tags]
        captions.append(", ".join(tags))
    return captions


def time_node(call, repeats: int) -> dict:
    started = time.perf_counter()
    call()
    first = time.perf_counter() - started
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        runs.append(time.perf_counter() - started)
    median = statistics.median(runs)
    return {"first_call_s": round(first, 3), "median_s": round(median, 3), "max_s": round(max(runs), 3),
            "under_target": median < TARGET_S}


def run(count: int, repeats: int) -> dict:
    import torch

    started = time.perf_counter()
    import transformers  # noqa: F401 - timed apart: ComfyUI imports it at startup, the CLI on first use

    transformers_import_s = round(time.perf_counter() - started, 3)
    from hypernet_studio.nodes.tags import EditTagsNode, FilterByTagsNode, TagStatsNode
    from hypernet_studio.runtime.api import headless_settings

    captions = make_captions(count)
    images = [torch.rand(1, 32, 32, 3) for _ in captions]
    masks = [torch.zeros(1, 32, 32) for _ in captions]
    stems = [f"picture{index:05d}" for index in range(count)]
    with tempfile.TemporaryDirectory() as base, headless_settings(base_dir=base):
        nodes = {
            "HN_TagStats": lambda: TagStatsNode().count(captions, [30], ["tag_stats.csv"]),
            "HN_EditTags": lambda: EditTagsNode().edit(captions, [RULES], images, masks, stems),
            "HN_FilterByTags": lambda: FilterByTagsNode().split(images, captions, [EXPRESSION], masks, stems),
        }
        results = {name: time_node(call, repeats) for name, call in nodes.items()}
        kept = len(FilterByTagsNode().split(images, captions, [EXPRESSION], masks, stems)["result"][0])
    tags_per_caption = [len(caption.split(",")) for caption in captions]
    return {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "python": platform.python_version(), "torch": torch.__version__,
            "load_average_1min": round(os.getloadavg()[0], 2),
            "captions": count, "tags_per_caption": [min(tags_per_caption), max(tags_per_caption)],
            "rules": RULES.strip().splitlines(), "expression": EXPRESSION, "kept_by_filter": kept,
            "repeats": repeats, "target_s": TARGET_S, "transformers_import_s": transformers_import_s, "nodes": results}


def markdown(report: dict) -> str:
    lines = ["# Caption nodes on a 1,000-caption list (CPU, headless)", "",
             f"Machine: {report['machine']}; Python {report['python']}, torch {report['torch']}; "
             f"1-minute load average at the end: {report['load_average_1min']} (the machine was shared).",
             f"{report['captions']} captions of {report['tags_per_caption'][0]}-{report['tags_per_caption'][1]} "
             f"tags (600-tag Zipf vocabulary), one 32x32 picture each. Filter expression: `{report['expression']}` "
             f"(keeps {report['kept_by_filter']}). Edit Tags rules: {'; '.join(report['rules'])}.", "",
             "| node | first call in the process | median of the next calls | slowest | under 1 s |",
             "|---|---|---|---|---|"]
    for name, result in report["nodes"].items():
        lines.append(f"| {name} | {result['first_call_s']:.3f} s | {result['median_s']:.3f} s | "
                     f"{result['max_s']:.3f} s | {'yes' if result['under_target'] else 'NO'} |")
    lines += ["", "Tag Statistics' first call includes building the CLIP tokenizer from the bundled vocabulary "
              "and importing matplotlib, once per process; importing transformers, which ComfyUI does at "
              f"startup, took another {report['transformers_import_s']:.3f} s before it and is not counted. "
              "Its calls include the table, the chart (rendered and written as a PNG preview) and the CSV."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import_pack()
    report = run(args.captions, args.repeats)
    write_results("captions_cpu", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
