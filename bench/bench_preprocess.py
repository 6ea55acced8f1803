"""Throughput of dataset preparation: Load Images -> Auto Crop -> Flip, in images per second.

    python bench/bench_preprocess.py [--count 100] [--chunk 10]

Generates `--count` synthetic 2048x1536 JPEGs (smooth shapes plus noise) in a temp folder,
then runs the real node functions (HN_LoadImages, HN_AutoCrop, HN_Flip append) over them in
chunks of `--chunk` files (ComfyUI lists hold every image in RAM: 100 float images of this
size would take 3.8 GB). Each variant is compared, in the same run, with a floor: Pillow
open -> RGB -> ImageOps.fit(512x512) -> mirror, the least work a crop+flip can do.

Writes bench/results/preprocess_cpu.json. CPU only: GPU figures are not measured (this
pipeline runs on the CPU anyway).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, import_pack  # noqa: E402

RESULTS = REPO / "bench" / "results" / "preprocess_cpu.json"


def make_images(folder: Path, count: int, size=(2048, 1536)) -> None:
    """Synthetic photos: a gradient, a few bright ellipses and rectangles, mild noise; JPEG q90."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    width, height = size
    base = np.linspace(40, 200, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    for index in range(count):
        image = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = int(rng.integers(0, width - 300)), int(rng.integers(0, height - 300))
            w, h = int(rng.integers(60, 300)), int(rng.integers(60, 300))
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
        image.save(folder / f"img{index:03d}.jpg", quality=90)
        (folder / f"img{index:03d}.txt").write_text(f"synthetic picture {index}")


def run_floor(folder: Path) -> tuple[float, int]:
    """Pillow-only crop+flip: seconds and pictures produced."""
    from PIL import Image, ImageOps

    start, produced = time.perf_counter(), 0
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as image:
            fitted = ImageOps.fit(image.convert("RGB"), (512, 512), Image.Resampling.LANCZOS)
            ImageOps.mirror(fitted)
            produced += 2
    return time.perf_counter() - start, produced


def run_nodes(folder: Path, count: int, chunk: int, method: str, a1111_compat: bool) -> dict:
    """Load -> Auto Crop -> Flip through the node functions; seconds per stage."""
    from hypernet_studio.nodes.dataset import HN_AutoCrop, HN_Flip, HN_LoadImages

    crop_widgets = {name: [options["default"]] for name, (_, options) in HN_AutoCrop.INPUT_TYPES()["required"].items()
                    if "default" in options}
    crop_widgets.update(method=[method], a1111_compat=[a1111_compat])
    stages = {"load": 0.0, "crop": 0.0, "flip": 0.0}
    produced = 0
    for offset in range(0, count, chunk):
        t0 = time.perf_counter()
        images, masks, captions, stems, _ = HN_LoadImages().load(str(folder), False, ".txt", False, offset, chunk,
                                                                 "white", 100.0)["result"]
        t1 = time.perf_counter()
        crops, crop_masks, crop_captions, crop_stems, _, _ = HN_AutoCrop().crop(
            images, captions, masks, stems, **crop_widgets)["result"]
        t2 = time.perf_counter()
        flipped = HN_Flip().flip(crops, ["horizontal"], ["append"], [False], crop_captions, crop_masks, crop_stems)
        t3 = time.perf_counter()
        stages["load"] += t1 - t0
        stages["crop"] += t2 - t1
        stages["flip"] += t3 - t2
        produced += len(flipped[0])
    total = sum(stages.values())
    return {"method": method, "a1111_compat": a1111_compat, "seconds": {k: round(v, 3) for k, v in stages.items()},
            "source_images_per_s": round(count / total, 3), "pictures_out": produced,
            "stage_images_per_s": {k: round(count / v, 2) for k, v in stages.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=10)
    args = parser.parse_args()
    import_pack()
    from hypernet_studio.hypernet.preprocess.faces import haar_available

    torch.set_grad_enabled(False)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_images(folder, args.count)
        floor_seconds, floor_out = run_floor(folder)
        floor_rate = args.count / floor_seconds
        variants = [run_nodes(folder, args.count, args.chunk, method, compat)
                    for method, compat in (("center", False), ("focal", False), ("focal", True))]
    for variant in variants:
        variant["ratio_to_floor"] = round(floor_rate / variant["source_images_per_s"], 2)
    result = {
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "haar_faces": haar_available(),
                    "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "note": "CPU only; GPU figures are not measured. The machine was shared (load_average_1min at "
                "start/end vs cpu_threads), so absolute times are pessimistic; same-run ratios compare. "
                "Images: 2048x1536 JPEG q90 -> 512x512 crops + mirrored "
                "copies. ratio_to_floor = seconds per image relative to a Pillow-only fit+mirror, same run.",
        "count": args.count,
        "floor": {"what": "Pillow open, RGB, ImageOps.fit 512 LANCZOS, mirror", "seconds": round(floor_seconds, 3),
                  "images_per_s": round(floor_rate, 3), "pictures_out": floor_out},
        "variants": variants,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
