"""Speed and memory of Train Hypernet against its floor and a reference loop (CPU).

    python bench/bench_train.py [--steps 8] [--sd15-resolutions 64,256] [--skip-sd15] [--skip-memory]

Writes bench/results/train_cpu.json and train_cpu.md. All figures are ratios measured in
one process: between two steps of Train Hypernet's loop one floor step and one reference
step run, so each triple sees the same machine load; ratios are medians of the per-step
pairs. The contenders:

- floor: the bare UNet forward + backward to the text context (no hypernetwork, no
  optimizer) on the same cached batch, same precision (fp32) - the least any trainer that
  back-propagates through the UNet can do per step;
- ours: Train Hypernet's loop (train_hypernetwork on the headless backend, AdamW, a 1,2,1
  hypernetwork on every attention width), per-step wall time after the first step;
- reference: a straightforward loop that runs the VAE and CLIP every step, as A1111 does
  with tag shuffle on, then the same forward/backward/AdamW step.

Models: an SD1.5-size UNet (320/640/1280/1280, 2 layers per block, 768 context; SD VAE and
a 12-layer 768-wide CLIP text encoder), random weights built in code, at 64x64 and 256x256 px;
and the built-in tiny model at 64x64 px. Peak RSS is measured in a child process for one training
run at 256x256 px on the SD1.5-size UNet, next to the floor's. GPU: not measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from _common import import_pack, reset_peak_rss, status_mib, write_results  # noqa: E402


def sd15_components():
    """SD1.5-shaped UNet, VAE and text encoder with random weights (no download)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from hypernet_studio.hypernet.sd.components import SDComponents, scaled_linear_alphas_cumprod
    from hypernet_studio.hypernet.sd.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    with torch.no_grad():
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=512)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return SDComponents(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
                        alphas_cumprod=scaled_linear_alphas_cumprod(), prediction_type="epsilon", family="sd1",
                        name="sd15-size random", latent_scale_factor=0.18215, context_dim=768)


def tiny_components():
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    return build_tiny_components(seed=0)


def _dataset(resolution: int):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, resolution, resolution, 3, generator=generator) for _ in range(4)]
    return images, [f"red, square, tag{i}" for i in range(4)]


def _spec():
    from hypernet_studio.hypernet.spec import HypernetSpec

    return HypernetSpec(layer_structure=[1, 2, 1], activation="linear", weight_init="Normal", sizes=None)


class Contenders:
    """The three loops on one model, sharing the cached batch."""

    def __init__(self, components, resolution: int):
        from hypernet_studio.hypernet.network import Hypernetwork
        from hypernet_studio.hypernet.patch import apply_hypernetwork
        from hypernet_studio.hypernet.sd.headless import headless_objects
        from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
        from hypernet_studio.hypernet.train.batches import prepare_examples

        self.model, self.clip, self.vae = headless_objects(components)
        self.components = components
        self.images, self.captions = _dataset(resolution)
        self.resolution = resolution
        self.examples = prepare_examples(self.images, self.captions, resolution=resolution)
        self.pixels = [example.pixels for example in self.examples]  # a training run drops its copies
        backend = DiffusersBackend(self.model, self.clip, self.vae)
        with torch.no_grad():
            mean, _ = backend.encode_images(self.examples[0].pixels)
            self.cond = self.clip.encode_texts([self.captions[0]])
        generator = torch.Generator().manual_seed(1)
        self.noise = torch.randn(mean.shape, generator=generator)
        self.t = torch.tensor([500])
        a = components.alphas_cumprod[self.t].view(-1, 1, 1, 1)
        self.x_t = a.sqrt() * mean + (1 - a).sqrt() * self.noise
        widths = self.model.attention_widths()
        self.reference_net = Hypernetwork.build(_spec(), sizes=widths, seed=0, name="ref")
        self.reference_net.train().requires_grad_(True)
        self.reference_model = apply_hypernetwork(self.model, self.reference_net, 1.0)
        self.reference_optimizer = torch.optim.AdamW(self.reference_net.parameters(), lr=1e-5)
        self.widths = widths
        self.hypernet_parameters = sum(p.numel() for p in self.reference_net.parameters())

    def floor_step(self):
        context = self.cond.clone().requires_grad_(True)
        out = self.components.unet(self.x_t, self.t, encoder_hidden_states=context, return_dict=False)[0]
        F.mse_loss(out, self.noise).backward()

    def reference_step(self, index: int):
        pixels = self.pixels[index % 4]
        vae = self.components.vae
        with torch.no_grad():
            latent = vae.encode(pixels.movedim(-1, 1) * 2 - 1).latent_dist.sample() * 0.18215
            cond = self.clip.encode_texts([self.captions[index % 4]])
        a = self.components.alphas_cumprod[self.t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * latent + (1 - a).sqrt() * self.noise
        loss = F.mse_loss(self.reference_model.apply_model(x_t, self.t, cond), self.noise)
        loss.backward()
        self.reference_optimizer.step()
        self.reference_optimizer.zero_grad(set_to_none=True)

    def interleaved(self, steps: int) -> dict[str, list[tuple[float, float]]]:
        """Run Train Hypernet's loop for `steps` + 1 steps; between two of its steps (in the
        progress hook, outside its timing) run one floor step and one reference step, so each
        triple sees the same machine load. Returns (wall s, CPU s) per step, first step dropped."""
        from hypernet_studio.hypernet.network import Hypernetwork
        from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
        from hypernet_studio.hypernet.train.config import TrainConfig, TrainHooks
        from hypernet_studio.hypernet.train.run import train_hypernetwork

        times: dict[str, list[tuple[float, float]]] = {"ours": [], "floor": [], "reference": []}
        contenders = self
        state = {"resumed": None}

        class Interleave(TrainHooks):
            def on_step(self, step, total, loss, learn_rate):
                finished = (time.perf_counter(), time.process_time())
                if state["resumed"] is not None:
                    times["ours"].append((finished[0] - state["resumed"][0], finished[1] - state["resumed"][1]))
                    times["floor"].append(_timed(lambda: contenders.floor_step()))
                    times["reference"].append(_timed(lambda: contenders.reference_step(step)))
                state["resumed"] = (time.perf_counter(), time.process_time())

        network = Hypernetwork.build(_spec(), sizes=self.widths, seed=0, name="bench")
        config = TrainConfig(name="bench", steps=steps + 1, templates=["[filewords]"], learning_rate="1e-5",
                             csv_every=0, save_every=0, preview_every=0, seed=0)
        train_hypernetwork(DiffusersBackend(self.model, self.clip, self.vae), network, self.fresh_examples(), config,
                           Interleave())
        return times

    def fresh_examples(self):
        from hypernet_studio.hypernet.train.batches import prepare_examples

        return prepare_examples(self.images, self.captions, resolution=self.resolution)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_model(label: str, components, resolution: int, steps: int, channels_last: bool = False,
                breakdown: bool = False, compile_too: bool = False) -> dict:
    """One row: floor, ours and reference interleaved; with `breakdown`, the hypernetwork alone
    and the optimizer too (train_breakdown.py). `channels_last` converts the UNet for the row."""
    import train_breakdown

    unet = components.unet
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    try:
        contenders = Contenders(components, resolution)
        contenders.floor_step()  # warm-up
        contenders.reference_step(0)
        row = _timing_row(label + (", channels-last" if channels_last else ""), contenders, resolution, steps)
        if breakdown:
            row["alone"] = train_breakdown.hypernetwork_alone(contenders, max(3, steps), compile_too)
            row["account"] = train_breakdown.account(row, row["alone"])
    finally:
        unet.to(memory_format=torch.contiguous_format)
    return row


def _timing_row(label: str, contenders: "Contenders", resolution: int, steps: int) -> dict:
    times = contenders.interleaved(steps)
    row = {"model": label, "resolution_px": resolution, "batch_size": 1, "precision": "fp32",
           "threads": torch.get_num_threads(),
           "hypernetwork": f"1,2,1 linear on widths {contenders.widths} ({contenders.hypernet_parameters:,} params)",
           "samples_per_contender": len(times["floor"]), "target_ours_over_floor": 1.15}
    for index, clock in enumerate(("wall", "cpu")):
        series = {name: [pair[index] for pair in values] for name, values in times.items()}
        for name, values in series.items():
            row[f"{name}_{clock}_s_per_step"] = round(statistics.median(values), 4)
        row[f"ours_over_floor_{clock}"] = round(statistics.median(
            o / f for o, f in zip(series["ours"], series["floor"])), 3)
        row[f"reference_over_ours_{clock}"] = round(statistics.median(
            r / o for r, o in zip(series["reference"], series["ours"])), 3)
        row[f"raw_{clock}_s"] = {name: [round(v, 3) for v in values] for name, values in series.items()}
    row["ours_steps_per_s_cpu"] = round(1 / row["ours_cpu_s_per_step"], 3)
    row["meets_target_cpu"] = row["ours_over_floor_cpu"] <= 1.15
    return row


# --------------------------------------------------------------------------- peak memory (child process)
def _memory_child(kind: str, resolution: int) -> None:
    """Peak RSS of training alone: the high-water mark is reset (clear_refs 5) after the models
    are built, so the build's own transient peak does not hide the training peak."""
    import_pack()
    contenders = Contenders(sd15_components(), resolution)
    before = status_mib("VmRSS")
    reset_peak_rss()
    if kind == "floor":
        for _ in range(2):
            contenders.floor_step()
    else:
        _train_only(contenders, 2)
    peak = status_mib("VmHWM")
    print(json.dumps({"kind": kind, "peak_rss_mib": round(peak, 1), "before_training_rss_mib": round(before, 1),
                      "training_increase_mib": round(peak - before, 1)}))


def _train_only(contenders: "Contenders", steps: int) -> None:
    """Train Hypernet's loop alone (no interleaved contenders), for the memory figure."""
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
    from hypernet_studio.hypernet.train.config import TrainConfig
    from hypernet_studio.hypernet.train.run import train_hypernetwork

    network = Hypernetwork.build(_spec(), sizes=contenders.widths, seed=0, name="bench")
    config = TrainConfig(name="bench", steps=steps, templates=["[filewords]"], learning_rate="1e-5", csv_every=0,
                         save_every=0, preview_every=0)
    train_hypernetwork(DiffusersBackend(contenders.model, contenders.clip, contenders.vae), network,
                       contenders.fresh_examples(), config)


def bench_memory(resolution: int) -> dict:
    out = {"resolution_px": resolution, "model": "SD1.5-size UNet (random weights)"}
    for kind in ("floor", "ours"):
        started = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, "--memory-child", kind, "--resolution", str(resolution)],
                               capture_output=True, text=True, timeout=1800)
        if child.returncode != 0:
            out[kind] = {"error": child.stderr.strip().splitlines()[-1] if child.stderr.strip() else "failed"}
            continue
        out[kind] = json.loads(child.stdout.strip().splitlines()[-1])
        out[kind]["wall_s"] = round(time.perf_counter() - started, 1)
    if "peak_rss_mib" in out.get("floor", {}) and "peak_rss_mib" in out.get("ours", {}):
        out["ours_over_floor_peak_rss"] = round(out["ours"]["peak_rss_mib"] / out["floor"]["peak_rss_mib"], 3)
        increases = (out["ours"].get("training_increase_mib"), out["floor"].get("training_increase_mib"))
        if all(increases) and increases[1] > 0:
            out["ours_over_floor_training_increase"] = round(increases[0] / increases[1], 3)
    return out


def _markdown(report: dict) -> str:
    lines = ["# Train Hypernet: CPU benchmark", "",
             f"Machine: {report['machine']['cpu_count']} CPUs, torch {report['machine']['torch']}, "
             f"{report['machine']['threads']} threads, load average at start {report['machine']['load_average']}. "
             "Ratios are medians of per-step pairs interleaved in one process. One intra-op thread, so "
             "process CPU time is the step's compute and barely depends on other load on the machine; "
             "wall time is shown too (this machine is shared with other jobs).", "",
             "| model | px | clock | floor s/step | ours s/step | reference s/step | ours/floor (target <= 1.15) "
             "| reference/ours |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["speed"]:
        for clock in ("cpu", "wall"):
            lines.append(f"| {row['model']} | {row['resolution_px']} | {clock} | {row[f'floor_{clock}_s_per_step']} | "
                         f"{row[f'ours_{clock}_s_per_step']} | {row[f'reference_{clock}_s_per_step']} | "
                         f"{row[f'ours_over_floor_{clock}']} | {row[f'reference_over_ours_{clock}']} |")
    lines += _breakdown_markdown(report["speed"])
    memory = report.get("memory")
    if memory:
        lines += ["", f"Peak RSS, {memory['model']} at {memory['resolution_px']} px (child processes):", ""]
        for kind in ("floor", "ours"):
            lines.append(f"- {kind}: {memory.get(kind)}")
        if "ours_over_floor_peak_rss" in memory:
            lines.append(f"- ours / floor, peak RSS: {memory['ours_over_floor_peak_rss']}")
        if "ours_over_floor_training_increase" in memory:
            lines.append(f"- ours / floor, RSS added by training: {memory['ours_over_floor_training_increase']}")
    lines += ["", "GPU (it/s, peak VRAM at 512 px, fp16/bf16, checkpointing on/off): not measured.", ""]
    return "\n".join(lines)


def _breakdown_markdown(rows: list[dict]) -> list[str]:
    """Where the step's time goes, as fractions of the floor (CPU seconds)."""
    rows = [row for row in rows if "account" in row]
    if not rows:
        return []
    lines = ["", "Where a step goes (CPU time, fractions of the floor; train_breakdown.py). The hypernetwork "
             "alone is its forward+backward on the inputs its modules see in one training forward; "
             "'least possible' = floor + hypernetwork + optimizer.", "",
             "| px | hypernetwork / floor | optimizer / floor | rest / floor | least possible / floor "
             "| measured ours / floor | hypernetwork alone s: unfused / fused / compiled |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        account, alone = row["account"], row["alone"]
        lines.append(f"| {row['resolution_px']} | {account['hypernetwork_over_floor']} | "
                     f"{account['optimizer_over_floor']} | {account['rest_over_floor']} | "
                     f"{account['least_possible_over_floor']} | {row['ours_over_floor_cpu']} | "
                     f"{alone['alone_unfused_cpu_s']} / {alone['alone_fused_cpu_s']} / "
                     f"{alone.get('alone_compiled_cpu_s', 'not run')} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="paired samples per model (tiny: 5x)")
    parser.add_argument("--skip-sd15", action="store_true")
    parser.add_argument("--sd15-resolutions", type=lambda text: [int(v) for v in text.split(",")], default=[64, 256],
                        help="comma-separated pixel sizes for the SD1.5-size speed rows")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-channels-last", action="store_true", help="no channels-last rows")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile of the hypernetwork alone")
    parser.add_argument("--memory-resolution", type=int, default=256)
    parser.add_argument("--memory-child", choices=("floor", "ours"))
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child, args.resolution)
        return
    import_pack()
    report = {"machine": {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "platform": platform.platform(), "load_average": [round(x, 2) for x in os.getloadavg()]},
              "speed": [], "gpu": "not measured"}
    # One intra-op thread: on a small shared CPU threads spin against each other, and with one
    # thread the process CPU time is a load-independent measure of each step's compute.
    torch.set_num_threads(1)
    report["machine"]["threads"] = 1
    report["speed"].append(bench_model("tiny-sd (built-in)", tiny_components(), 64, args.steps * 5))
    print(json.dumps(report["speed"][-1], indent=1), flush=True)
    if not args.skip_sd15:
        components = sd15_components()
        for resolution in args.sd15_resolutions:
            steps = args.steps if resolution <= 64 else max(3, args.steps // 2)
            for channels_last in (False, True) if not args.skip_channels_last else (False,):
                report["speed"].append(bench_model("SD1.5-size UNet (random weights)", components, resolution, steps,
                                                   channels_last, breakdown=not channels_last,
                                                   compile_too=not args.skip_compile))
                print(json.dumps(report["speed"][-1], indent=1), flush=True)
    if not args.skip_memory:
        report["memory"] = bench_memory(args.memory_resolution)
        print(json.dumps(report["memory"], indent=1), flush=True)
    write_results("train_cpu", report, _markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
