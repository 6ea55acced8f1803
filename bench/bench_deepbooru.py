"""Deepbooru tagging speed on the CPU: the full resnet_custom_v3 (9176 tags, random weights).

    python bench/bench_deepbooru.py [--images 4] [--batch 2]

Builds the full-size network with random weights (the real architecture and parameter
count; values are random, so the tags are meaningless), then times, in the same run:

1. the bare forward pass on a prepared 512x512 batch (the floor: what the network costs),
2. the whole `tag_images` pipeline (fit + edge fill to 512, forward, post-processing),
   batch 1 and `--batch`, so the ratio shows what preprocessing and batching add or save.
3. the pipeline at input_size 256 (the node's speed option), as a ratio to 512.

Writes bench/results/deepbooru_cpu.json. CPU only: GPU figures are not measured (on CUDA the node
runs under fp16 autocast like A1111).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch
from _common import REPO, import_pack, seconds  # noqa: E402

RESULTS = REPO / "bench" / "results" / "deepbooru_cpu.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    import_pack()
    from PIL import Image

    from hypernet_studio.hypernet.taggers import deepbooru
    from hypernet_studio.hypernet.taggers.deepbooru_post import TagOptions

    torch.set_grad_enabled(False)
    load_before = os.getloadavg()[0]
    net = deepbooru.DeepDanbooruNet(deepbooru.DEEPBOORU_NUM_TAGS).float().eval()
    generator = torch.Generator().manual_seed(0)
    for parameter in net.parameters():  # N(0, 0.02), the weights this benchmark has always used
        parameter.normal_(0.0, 0.02, generator=generator)
    model = deepbooru.DeepbooruModel(net=net, tags=[f"tag_{i}" for i in range(net.num_tags)],
                                     path=Path("random"), device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((768, 640, 3)) * 255).astype(np.uint8)) for _ in range(args.images)]
    options = TagOptions()

    prepared = torch.from_numpy(np.stack([deepbooru.prepare_deepbooru_input(images[0])]))
    net(prepared)  # warm-up (allocator, oneDNN primitives)
    forward = min(seconds(lambda: net(prepared)) for _ in range(2))
    batch1 = seconds(lambda: deepbooru.tag_images(model, images, options, batch_size=1)) / args.images
    batched = seconds(lambda: deepbooru.tag_images(model, images, options, batch_size=args.batch)) / args.images
    small = seconds(lambda: deepbooru.tag_images(model, images, options, batch_size=args.batch,
                                                input_size=256)) / args.images
    result = {
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": "cpu",
                    "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "note": "CPU only; GPU figures are not measured. The machine was shared (load_average_1min at "
                "start/end vs cpu_threads), so absolute times are pessimistic; same-run ratios compare. "
                "Full resnet_custom_v3, 9176 tags, random weights, "
                "fp32. Ratios are against the bare 512x512 forward of one image, same run.",
        "parameters_millions": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        "images": args.images,
        "forward_512_seconds": round(forward, 3),
        "pipeline_512_batch1": {"seconds_per_image": round(batch1, 3), "images_per_s": round(1 / batch1, 3),
                                "ratio_to_forward": round(batch1 / forward, 2)},
        f"pipeline_512_batch{args.batch}": {"seconds_per_image": round(batched, 3),
                                            "images_per_s": round(1 / batched, 3),
                                            "ratio_to_forward": round(batched / forward, 2)},
        "pipeline_256": {"seconds_per_image": round(small, 3), "images_per_s": round(1 / small, 3),
                         "ratio_to_512_batched": round(small / batched, 2)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
