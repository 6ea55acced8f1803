"""Headless executor overhead, as ratios against calling the same node functions directly.

    python bench/runtime_overhead.py [--nodes 200] [--repeats 5]

Writes bench/results/runtime_overhead.json (and prints it). The node work is trivial (an
integer add), so the numbers are the runtime's own cost per node: validation, signatures,
list handling, events and inference_mode. CPU only; GPU figures are not measured (the
runtime does no device work of its own)."""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
from _common import median_seconds  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "runtime_overhead.json"


class Source:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 1000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        return (value,)


class Add:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"forceInput": True}), "b": ("INT", {"default": 1, "min": -9, "max": 9})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a, b):
        return (a + b,)


class Sink:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        return {"ui": {"value": [value]}}


REGISTRY = {"Source": Source, "Add": Add, "Sink": Sink}


def chain_prompt(length: int, first_b: int = 1) -> dict:
    prompt = {"0": {"class_type": "Source", "inputs": {"value": 1}}}
    for i in range(1, length + 1):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": first_b if i == length else 1}}
    prompt[str(length + 1)] = {"class_type": "Sink", "inputs": {"value": [str(length), 0]}}
    return prompt


def chain_ui(length: int) -> dict:
    nodes = [{"id": 0, "type": "Source", "mode": 0, "inputs": [],
              "outputs": [{"name": "INT", "type": "INT", "links": [1]}],
              "widgets_values": [1]}]
    links = []
    for i in range(1, length + 2):
        cls = "Add" if i <= length else "Sink"
        nodes.append({"id": i, "type": cls, "mode": 0, "inputs": [{"name": "a" if cls == "Add" else "value",
                                                                 "type": "INT", "link": i}],
                      "outputs": [{"name": "INT", "type": "INT", "links": [i + 1]}] if cls == "Add" else [],
                      "widgets_values": [1] if cls == "Add" else []})
        links.append([i, i - 1, 0, i, 0, "INT"])
    return {"nodes": nodes, "links": links, "version": 0.4}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from hypernet_studio.runtime.executor import Executor
    from hypernet_studio.runtime.workflow import ui_to_api

    length = args.nodes

    def direct():
        with torch.inference_mode():
            value = Source().run(1)[0]
            for _ in range(length):
                value = Add().run(value, 1)[0]
            Sink().run(value)

    def fresh_run():
        Executor(REGISTRY).run(chain_prompt(length))

    warm = Executor(REGISTRY)
    warm.run(chain_prompt(length))

    def cached_run():
        warm.run(chain_prompt(length))

    toggle = {"b": 1}

    def last_widget_changed():
        toggle["b"] = -toggle["b"]
        warm.run(chain_prompt(length, first_b=toggle["b"]))

    ui = chain_ui(length)
    floor = median_seconds(direct, args.repeats, warmup=False)
    results = {
        "nodes": length + 2,
        "direct_calls_s": floor,
        "fresh_executor_s": median_seconds(fresh_run, args.repeats, warmup=False),
        "cached_rerun_s": median_seconds(cached_run, args.repeats, warmup=False),
        "last_widget_changed_s": median_seconds(last_widget_changed, args.repeats, warmup=False),
        "ui_to_api_s": median_seconds(lambda: ui_to_api(ui, REGISTRY), args.repeats, warmup=False),
    }
    results["per_node_overhead_ms"] = (results["fresh_executor_s"] - floor) / (length + 2) * 1000
    for key in ("fresh_executor_s", "cached_rerun_s", "last_widget_changed_s"):
        results[key.replace("_s", "_vs_direct")] = results[key] / floor
    results["machine"] = {"python": platform.python_version(), "torch": torch.__version__,
                          "cpu": platform.processor() or platform.machine(), "device": "cpu",
                          "cpu_count": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
                          "gpu": "not measured"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
