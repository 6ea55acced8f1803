"""Peak memory and speed of SDXL hypernetwork training on the CPU at 64 px.

    python bench/bench_sdxl_memory.py [--steps 3] [--skip-full-size]

One child process per setting, each training a 1,2,1 hypernetwork (SDXL's widths 2048/640/1280)
for a few steps through Train Hypernet's loop (headless backend):
- tiny-sdxl (built-in), and an SDXL-size UNet (SDXL base's layout: 320/640/1280 channels,
  1/2/10 transformer layers, 2048 context; random weights built in code) with the tiny model's
  text encoders and VAE, which give the same conditioning widths;
- UNet weights fp32 with fp32 compute, or bf16 weights with bf16 autocast (how a GPU user
  loads SDXL); gradient checkpointing off and on.
Peak RSS is the high-water mark of training alone (reset after the models are built).
Writes bench/results/sdxl_memory_cpu.json and .md. CPU only; GPU: not measured."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch
from _common import import_pack, reset_peak_rss, status_mib, write_results

SETTINGS = [(precision, checkpointing) for precision in ("fp32", "bf16") for checkpointing in (False, True)]


def sdxl_size_unet() -> torch.nn.Module:
    """SDXL base's UNet layout with random weights (seeded)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.no_grad():
        unet = UNet2DConditionModel(
            sample_size=128, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    return unet.eval().requires_grad_(False)


def child(model: str, precision: str, checkpointing: bool, steps: int) -> dict:
    import dataclasses

    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.sd import tiny_sdxl
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.spec import HypernetSpec
    from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
    from hypernet_studio.hypernet.train.batches import prepare_examples
    from hypernet_studio.hypernet.train.config import TrainConfig, TrainHooks
    from hypernet_studio.hypernet.train.run import train_hypernetwork

    components = tiny_sdxl.build_tiny_sdxl_components()
    if model == "sdxl-size":
        components = dataclasses.replace(components, unet=sdxl_size_unet())
    if precision == "bf16":
        components.unet.to(torch.bfloat16)
    objects = headless_objects(components)
    unet_parameters = sum(p.numel() for p in components.unet.parameters())
    generator = torch.Generator().manual_seed(0)
    examples = prepare_examples([torch.rand(1, 64, 64, 3, generator=generator) for _ in range(2)], ["a", "b"],
                                resolution=64)
    network = Hypernetwork.build(HypernetSpec(sizes=None), sizes=objects[0].attention_widths(), seed=0)
    ends: list[float] = []

    class Clock(TrainHooks):
        def on_step(self, step, total, loss, learn_rate):
            ends.append(time.perf_counter())

    before = status_mib("VmRSS")
    reset_peak_rss()
    started = time.perf_counter()
    config = TrainConfig(name="bench", steps=steps, csv_every=0, save_every=0, preview_every=0, precision=precision,
                         gradient_checkpointing=checkpointing, batch_size=1, templates=["[filewords]"])
    train_hypernetwork(DiffusersBackend(*objects), network, examples, config, Clock())
    seconds = [b - a for a, b in zip([started] + ends, ends)][1:]
    return {"model": model, "precision": precision, "gradient_checkpointing": checkpointing,
            "unet_parameters": unet_parameters, "hypernetwork_parameters": sum(p.numel() for p in network.parameters()),
            "before_training_rss_mib": round(before, 1), "peak_rss_mib": round(status_mib("VmHWM"), 1),
            "training_increase_mib": round(status_mib("VmHWM") - before, 1),
            "s_per_step": round(sorted(seconds)[len(seconds) // 2], 2), "threads": torch.get_num_threads()}


def run_child(model: str, precision: str, checkpointing: bool, steps: int) -> dict:
    command = [sys.executable, __file__, "--child", model, precision, str(int(checkpointing)), "--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"model": model, "precision": precision, "gradient_checkpointing": checkpointing,
                "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    lines = ["# SDXL training: peak memory and speed on the CPU at 64 px", "",
             f"Machine: {report['machine']}. One child process per row; 1,2,1 hypernetwork on 2048/640/1280; "
             "batch 1; peak RSS of training alone (models built before the high-water mark is reset).", "",
             "| model | UNet weights / compute | checkpointing | RSS before training MiB | peak RSS MiB "
             "| added by training MiB | s/step |", "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['precision']} | {row['gradient_checkpointing']} | "
                         f"error: {row['error']} | | | |")
            continue
        lines.append(f"| {row['model']} | {row['precision']} | {'on' if row['gradient_checkpointing'] else 'off'} | "
                     f"{row['before_training_rss_mib']} | {row['peak_rss_mib']} | {row['training_increase_mib']} | "
                     f"{row['s_per_step']} |")
    lines += ["", "GPU: not measured.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-full-size", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import_pack()
    if args.child:
        model, precision, checkpointing = args.child
        print(json.dumps(child(model, precision, checkpointing == "1", args.steps)))
        return
    models = ["tiny-sdxl"] + ([] if args.skip_full_size else ["sdxl-size"])
    rows = []
    for model in models:
        for precision, checkpointing in SETTINGS:
            rows.append(run_child(model, precision, checkpointing, args.steps))
            print(json.dumps(rows[-1]), flush=True)
    report = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, {platform.platform()}", "rows": rows}
    write_results("sdxl_memory_cpu", report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
