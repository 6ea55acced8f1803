"""Cost of Apply Hypernet: sampling with vs without a hypernetwork, and per-width module cost.

    python bench/bench_apply.py [--repeats 3] [--skip-sd1]

Writes bench/results/apply_cpu.json (and prints it). Everything is a ratio against the same
work without the hypernetwork, measured in the same run:

1. Sampling on the built-in tiny model (64x64 px, euler, cfg, 4 steps), same seed, with and
   without a 1,2,1 hypernetwork on every attention width.
2. One UNet call (batch 2, as with cfg) on an SD1-width UNet (320/640/1280 blocks, 768 context,
   one layer per block, random weights) at 256x256 px, with and without an SD1 1,2,1 file.
3. Forward time of one (k, v) module pair per width at SD1's token counts for 512x512 px
   (320: 4096 tokens, 640: 1024, 1280: 256, 768: 77 context tokens), batch 2. The
   self-attention widths run over many more tokens, so they dominate.

CPU only: GPU figures are not measured.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch
from _common import REPO, import_pack, median_seconds, seconds  # noqa: E402

RESULTS = REPO / "bench" / "results" / "apply_cpu.json"


def _paired(repeats: int, base_fn, with_fn) -> tuple[float, float, float]:
    """Interleave base/with calls (after a warm-up of each) so drifting machine load hits both
    alike; returns the median times and the median of the per-pair ratios."""
    base_fn()
    with_fn()
    base_times, with_times = [], []
    for _ in range(repeats):
        base_times.append(seconds(base_fn))
        with_times.append(seconds(with_fn))
    ratios = [w / b for b, w in zip(base_times, with_times)]
    return statistics.median(base_times), statistics.median(with_times), statistics.median(ratios)


def bench_tiny_sampling(repeats: int) -> dict:
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.patch import apply_hypernetwork
    from hypernet_studio.hypernet.sd.headless import HeadlessModel
    from hypernet_studio.hypernet.sd.sampling import sample
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components
    from hypernet_studio.hypernet.spec import HypernetSpec

    model = HeadlessModel(build_tiny_components())
    hn = Hypernetwork.build(HypernetSpec(sizes=model.attention_widths()), seed=0)
    patched = apply_hypernetwork(model, hn, 1.0)
    latent = torch.zeros(1, 4, 8, 8)
    context = torch.randn(1, 77, model.components.context_dim, generator=torch.Generator().manual_seed(0))

    def run(m):
        return lambda: sample(m, latent, context, context, seed=0, steps=4, cfg=7.0,
                              sampler_name="euler", scheduler="normal")

    with torch.inference_mode():
        base, with_hn, ratio = _paired(repeats, run(model), run(patched))
    return {"model": "tiny-sd (built-in)", "widths": model.attention_widths(), "steps": 4, "pairs": repeats,
            "seconds_without": round(base, 4), "seconds_with": round(with_hn, 4), "ratio": round(ratio, 3)}


def bench_sd1_unet_call(repeats: int) -> dict:
    from diffusers import UNet2DConditionModel

    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.patch import HypernetPatch
    from hypernet_studio.hypernet.sd.attention import ActivePatches, active_patches, install_patchable_attention
    from hypernet_studio.hypernet.spec import HypernetSpec

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, layers_per_block=1, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8,
    ).eval()
    install_patchable_attention(unet)
    hn = Hypernetwork.build(HypernetSpec(), seed=0)  # SD1 1,2,1: 768/320/640/1280
    patch = HypernetPatch([(hn, 1.0)])
    x, t, context = torch.randn(2, 4, 32, 32), torch.tensor([500, 500]), torch.randn(2, 77, 768)

    def call(patches):
        def run():
            with active_patches(patches):
                unet(x, t, encoder_hidden_states=context, return_dict=False)
        return run

    with torch.inference_mode():
        base, with_hn, ratio = _paired(repeats, call(None), call(ActivePatches(attn1=(patch,), attn2=(patch,))))
    params = sum(p.numel() for p in unet.parameters())
    return {"model": f"SD1-width UNet, 1 layer per block, {params / 1e6:.0f}M params, random weights",
            "latent": [2, 4, 32, 32], "pairs": repeats, "seconds_without": round(base, 4),
            "seconds_with": round(with_hn, 4), "ratio": round(ratio, 3)}


def bench_widths(repeats: int) -> dict:
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.spec import HypernetSpec

    tokens = {320: 4096, 640: 1024, 1280: 256, 768: 77}
    hn = Hypernetwork.build(HypernetSpec(), seed=0)
    out = {}
    with torch.inference_mode():
        for width, count in tokens.items():
            x = torch.randn(2, count, width)
            k, v = hn.layers[width]
            elapsed = median_seconds(lambda k=k, v=v, x=x: (k(x), v(x)), repeats)
            # Multiply-adds of two Linear layers (d -> 2d -> d) in each of k and v, batch 2.
            gflop = 2 * 2 * (2 * count) * (width * 2 * width) * 2 / 1e9
            out[str(width)] = {"tokens": count, "ms_per_kv_pair": round(elapsed * 1000, 3),
                               "gflop_per_kv_pair": round(gflop, 3)}
    total = sum(entry["ms_per_kv_pair"] for entry in out.values())
    for entry in out.values():
        entry["share"] = round(entry["ms_per_kv_pair"] / total, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sd1", action="store_true", help="skip the SD1-width UNet (slow on small CPUs)")
    args = parser.parse_args()
    import_pack()
    results = {
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": "cpu"},
        "note": "CPU only; GPU figures are not measured. Ratios compare with/without in the same run.",
        "tiny_sampling": bench_tiny_sampling(args.repeats),
        "per_width_module_cost": bench_widths(args.repeats),
    }
    if not args.skip_sd1:
        results["sd1_width_unet_call"] = bench_sd1_unet_call(max(3, args.repeats))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
