"""The prepared GPU suite: smoke tests and training/sampling figures in one command.

    bash bench/gpu_suite.sh            # one CUDA GPU, at most 8 minutes on an H100-class card
    bash bench/gpu_suite.sh --dry-run  # tiny sizes on the CPU, a minute or two (CI runs it)

Random weights built in code, no downloads. Every part runs in its own child process (a
crash or an out-of-memory error is a row, not the end of the suite; peak memory is per part).
Writes bench/results/gpu_suite_gpu.json and .md; a dry run writes to --out (default a fresh
temporary folder), never over the GPU results.

Parts:
- smoke: README command 1 (`run workflows/txt2img.json`), the training workflow with previews
  on, SDXL training at bf16 with checkpointing, the training workflow under torchrun with
  one process (NCCL on CUDA, gloo on the CPU); each through the CLI on the suite's device;
- train: an SD1.5-size UNet at 512 px, batch 1: Train Hypernet's step at fp16 and bf16, gradient
  checkpointing off and on, against the bare UNet's forward + backward (the floor) in the same
  dtype; an SDXL-size UNet at 1024 px, bf16, checkpointing on. Timed with CUDA events after
  warm-up steps, peak memory as torch.cuda.max_memory_allocated;
- apply: sampling with a hypernetwork applied, the k/v pair fused against unfused, against
  sampling without one.
Dry run: the built-in tiny models at 64 px on the CPU, wall-clock timing, peak memory not
measured."""
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

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
STEPS = {"full": (3, 10), "dry": (1, 2)}  # (warm-up steps, timed steps) per training part


# --------------------------------------------------------------------------- the parts
def smoke_parts(device: str, dry: bool) -> dict[str, list[str]]:
    """CLI command lines (after `run`) for the smoke tests; a dry run samples one step."""
    workflows = REPO / "workflows"
    train, sdxl = str(workflows / "train_hypernet.json"), str(workflows / "train_hypernet_sdxl.json")
    one_step = (lambda node: ["--set", f"{node}.steps=1"]) if dry else (lambda node: [])
    short = ["--set", "4.steps=4", "--set", "4.preview_every=2", "--set", "4.save_every=0", *one_step(9)]
    if dry:
        short += ["--set", "4.preview_steps=1"]
    return {
        "txt2img (README command 1)": [str(workflows / "txt2img.json"), "--device", device, *one_step(3)],
        "training with previews": [train, "--device", device, *short],
        "SDXL training bf16 + checkpointing": [sdxl, "--device", device, "--set", "4.steps=2", "--set",
                                               "4.precision=bf16", "--set", "4.gradient_checkpointing=true",
                                               *one_step(9)],
        "torchrun, 1 process": [train, "--device", device, "--nproc-per-node", "1", *short],
    }


def train_parts(dry: bool) -> list[dict]:
    if dry:  # fp32: the CPU is slow at bf16 convolutions, and the dry run checks the wiring only
        return [dict(model="tiny-sd", resolution=64, precision="fp32", checkpointing=c) for c in (False, True)]
    parts = [dict(model="sd15-size", resolution=512, precision=p, checkpointing=c)
             for p in ("fp16", "bf16") for c in (False, True)]
    return parts + [dict(model="sdxl-size", resolution=1024, precision="bf16", checkpointing=True)]


# --------------------------------------------------------------------------- children
def _components(model: str):
    sys.path.insert(0, str(REPO / "bench"))
    import dataclasses

    if model == "sd15-size":
        from bench_train import sd15_components

        return sd15_components()
    if model == "sdxl-size":
        from bench_sdxl_memory import sdxl_size_unet

        from hypernet_studio.hypernet.sd.tiny_sdxl import build_tiny_sdxl_components

        return dataclasses.replace(build_tiny_sdxl_components(), unet=sdxl_size_unet())
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    return build_tiny_components(seed=0)


class _Clock:
    """Step ends: CUDA events on a GPU (read after one synchronize at the end), else wall time."""

    def __init__(self, device: torch.device):
        self.cuda, self.marks = device.type == "cuda", []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000.0 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def child_train(part: dict, device: torch.device, dry: bool) -> list[dict]:
    """Train Hypernet's loop: warm-up steps, then the timed ones (their step-to-step times)."""
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.spec import HypernetSpec
    from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
    from hypernet_studio.hypernet.train.batches import prepare_examples
    from hypernet_studio.hypernet.train.config import TrainConfig, TrainHooks
    from hypernet_studio.hypernet.train.run import train_hypernetwork

    components = _components(part["model"])
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[part["precision"]]
    for module in (components.unet, components.vae, components.text_encoder):
        module.to(device)
    components.unet.to(dtype)
    objects = headless_objects(components)
    size = part["resolution"]
    generator = torch.Generator().manual_seed(0)
    examples = prepare_examples([torch.rand(1, size, size, 3, generator=generator) for _ in range(2)],
                                ["red, square", "blue, circle"], resolution=size)
    network = Hypernetwork.build(HypernetSpec(sizes=None), sizes=objects[0].attention_widths(), seed=0)
    warmup, timed = STEPS["dry" if dry else "full"]
    clock = _Clock(device)

    class Steps(TrainHooks):
        def on_step(self, step: int, total: int, loss: float, learn_rate: float) -> None:
            if step >= warmup:
                clock.mark()
                if step == warmup and device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)

    config = TrainConfig(name="bench", steps=warmup + timed, csv_every=0, save_every=0, preview_every=0,
                         precision=part["precision"], gradient_checkpointing=part["checkpointing"], batch_size=1,
                         templates=["[filewords]"])
    train_hypernetwork(DiffusersBackend(*objects, device=device), network, examples, config, Steps())
    row = dict(part, contender="ours", s_per_step=_median(clock.seconds()), **_peak(device))
    return [row, _floor(components.unet, part, device, dtype, warmup, timed)]


def _floor(unet: torch.nn.Module, part: dict, device: torch.device, dtype: torch.dtype, warmup: int,
           timed: int) -> dict:
    """The bare UNet's forward + backward to the text context, same shapes and dtype, no hypernetwork."""
    latent = part["resolution"] // 8
    x = torch.randn(1, 4, latent, latent, device=device, dtype=dtype)
    width = unet.config.cross_attention_dim
    context = torch.randn(1, 77, width, device=device, dtype=dtype, requires_grad=True)
    extra = {}
    if unet.config.addition_embed_type == "text_time":
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, 1280, device=device, dtype=dtype),
                                       "time_ids": torch.zeros(1, 6, device=device, dtype=dtype)}}
    if part["checkpointing"]:
        unet.enable_gradient_checkpointing()
        unet.train()  # diffusers checkpoints in training mode only (the SD UNets have no dropout)
    clock, t = _Clock(device), torch.tensor([500], device=device)
    for step in range(warmup + timed + 1):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        if step >= warmup:
            clock.mark()
        unet(x, t, encoder_hidden_states=context, **extra).sample.float().pow(2).mean().backward()
        context.grad = None
    return dict(part, contender="floor (bare UNet)", s_per_step=_median(clock.seconds()), **_peak(device))


def _peak(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_mib": None}
    return {"peak_mib": round(torch.cuda.max_memory_allocated(device) / 2**20)}


def child_apply(device: torch.device, dry: bool) -> list[dict]:
    """Sampling with no hypernetwork, then with one applied, the k/v pair fused and unfused."""
    from hypernet_studio.hypernet import kv_pair
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.patch import apply_hypernetwork
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.sampling import sample
    from hypernet_studio.hypernet.spec import HypernetSpec

    components = _components("tiny-sd" if dry else "sd15-size")
    for module in (components.unet, components.vae, components.text_encoder):
        module.to(device)
    if device.type == "cuda":
        components.unet.to(torch.float16)
    model, clip, _ = headless_objects(components)
    network = Hypernetwork.build(HypernetSpec(sizes=None), sizes=model.attention_widths(), seed=0).eval()
    context = clip.encode_texts(["red, square", ""])
    latent = torch.zeros(1, 4, 8 if dry else 64, 8 if dry else 64)
    steps = 2 if dry else 20
    rows = []
    for label, target, fused in (("no hypernetwork", model, None), ("applied, unfused", None, False),
                                 ("applied, fused", None, True)):
        target = target or apply_hypernetwork(model, network, 1.0)
        kv_pair.FUSED_DEVICE_TYPES = frozenset({device.type}) if fused else frozenset()
        run = lambda target=target: sample(target, latent, context[0:1], context[1:2], seed=0,  # noqa: E731
                                           steps=steps, cfg=7.0, sampler_name="euler", scheduler="normal")
        run()
        clock = _Clock(device)
        for _ in range(2 if dry else 3):
            clock.mark()
            run()
        clock.mark()
        rows.append({"contender": label, "steps": steps, "s_per_image": _median(clock.seconds())})
    return rows


def child_main(kind: str, payload: str, device_name: str, dry: bool) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from _common import import_pack

    import_pack()
    device = torch.device(device_name)
    torch.manual_seed(0)
    rows = child_train(json.loads(payload), device, dry) if kind == "train" else child_apply(device, dry)
    print(json.dumps(rows))


# --------------------------------------------------------------------------- the suite
def _package_path(folder: Path) -> dict:
    """Children import this checkout as `hypernet_studio` (torchrun's processes run `-m
    hypernet_studio.runtime`), whatever the checkout's folder is called."""
    link = folder / "hypernet_studio"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))


def _child(command: list[str], env: dict, timeout: float) -> tuple[int, str, float]:
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s", time.perf_counter() - started
    output = done.stdout.strip() if done.returncode == 0 else (done.stderr.strip() or done.stdout.strip())
    return done.returncode, output, time.perf_counter() - started


def run_smoke(device: str, dry: bool, out: Path, env: dict, timeout: float) -> list[dict]:
    """The CLI on the shipped workflows, against a base folder holding the example inputs."""
    base = out / "smoke"
    code, output, _ = _child([sys.executable, "-m", "hypernet_studio.runtime", "examples", "--base-dir", str(base)],
                             env, timeout)
    if code != 0:
        return [{"smoke": "hypernet-studio examples", "ok": False, "exit": code, "seconds": 0.0,
                 "error": output.splitlines()[-1:]}]
    rows = []
    for label, args in smoke_parts(device, dry).items():
        command = [sys.executable, "-m", "hypernet_studio.runtime", "run", *args, "--quiet", "--base-dir", str(base)]
        code, output, seconds = _child(command, env, timeout)
        rows.append({"smoke": label, "ok": code == 0, "exit": code, "seconds": round(seconds, 1),
                     "error": None if code == 0 else output.splitlines()[-3:]})
    return rows


def run_measurements(device: str, dry: bool, env: dict, timeout: float) -> list[dict]:
    jobs = [("train", json.dumps(part)) for part in train_parts(dry)] + [("apply", "{}")]
    rows = []
    for kind, payload in jobs:
        command = [sys.executable, __file__, "--child", kind, payload, "--device", device] + (["--dry-run"] * dry)
        code, output, _ = _child(command, env, timeout)
        if code == 0:
            rows.extend(dict(row, part=kind) for row in json.loads(output.splitlines()[-1]))
        else:
            rows.append(dict(json.loads(payload), part=kind, error=(output.splitlines() or ["failed"])[-1]))
    return rows


def markdown(report: dict) -> str:
    lines = [f"# GPU suite ({report['device']})", "", f"{report['when']}, torch {report['torch']}, "
             f"{'dry run: tiny sizes on the CPU, not GPU figures' if report['dry_run'] else 'measured'}.", "",
             "| smoke test | result | seconds |", "| --- | --- | --- |"]
    lines += [f"| {r['smoke']} | {'ok' if r['ok'] else 'FAILED: ' + ' '.join(r['error'] or [])} | {r['seconds']} |"
              for r in report["smoke"]]
    lines += ["", "| part | model | px | dtype | checkpointing | contender | s/step or s/image | peak MiB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["measurements"]:
        seconds = r.get("s_per_step", r.get("s_per_image"))
        value = "FAILED: " + r["error"] if "error" in r else f"{seconds:.4f}"
        peak = r.get("peak_mib")
        lines.append(f"| {r['part']} | {r.get('model', '')} | {r.get('resolution', '')} | {r.get('precision', '')} | "
                     f"{r.get('checkpointing', '')} | {r.get('contender', '')} | {value} | "
                     f"{'not measured' if peak is None else peak} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (for CI)")
    parser.add_argument("--device", help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--out", type=Path, help="results folder (default: bench/results; dry run: a temp folder)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PART"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if args.child:
        child_main(*args.child, device, args.dry_run)
        return 0
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device; use --dry-run for the CPU check", file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu_suite_")) if args.dry_run else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    timeout = 300.0 if args.dry_run else 240.0
    with tempfile.TemporaryDirectory() as folder:
        env = _package_path(Path(folder))
        report = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor()
                  or "cpu", "dry_run": args.dry_run, "torch": torch.__version__,
                  "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "smoke": run_smoke(device, args.dry_run, out, env, timeout),
                  "measurements": run_measurements(device, args.dry_run, env, timeout)}
    stem = "gpu_suite_dry_run" if args.dry_run else "gpu_suite_gpu"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    failed = [r for r in report["smoke"] if not r["ok"]] + [r for r in report["measurements"] if "error" in r]
    print(f"results in {out}; {len(failed)} part(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
