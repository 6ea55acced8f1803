"""Prep on every core: Load Images + focal Auto Crop with HYPERNET_STUDIO_WORKERS = 1 vs the
machine's cores, and, per job, the thread pool the pack uses against a spawn process pool.

    python bench/scale_prep_workers.py [--quick] [--count 24] [--no-write]

Makes `count` synthetic 4-MP photos (2448x1632 JPEG q90: a gradient, shapes, noise) in a temp
folder, then runs the real node functions (HN_LoadImages at its defaults, HN_AutoCrop focal
512x512 with faces, entropy and edges) with 1 worker and with one per core, alternating, and
reports the median times and their ratio. The job comparison times each per-picture job on
its own (decode one file; plan a focal crop of one 1536 px picture) in threads and in a spawn
process pool of the same size, which has to pickle the pictures across; the process pool's
start (each worker imports the pack) is timed apart, as a pool kept alive would pay it once.

`measure(quick)` returns the report; run as a script it prints the JSON and (unless --quick or
--no-write) writes bench/results/prep_workers_cpu.json. CPU only: GPU figures are not measured
(this work runs on the CPU). The machine may be shared: the load average is recorded, and
only the same-run ratios compare.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from _common import REPO, import_pack

RESULT_FILE = REPO / "bench" / "results" / "prep_workers_cpu.json"
PHOTO_SIZE = (2448, 1632)  # 4 MP, 3:2


# `import hypernet_studio` as this checkout, with the headless host; runs again in each spawned
# job process, which imports this module.
import_pack()


def write_photos(folder: Path, count: int) -> None:
    """Synthetic 4-MP photos with captions: gradient, bright shapes, mild noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    width, height = PHOTO_SIZE
    base = np.linspace(40, 200, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    for index in range(count):
        image = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = int(rng.integers(0, width - 400)), int(rng.integers(0, height - 400))
            w, h = int(rng.integers(80, 400)), int(rng.integers(80, 400))
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
        image.save(folder / f"photo{index:04d}.jpg", quality=90)
        (folder / f"photo{index:04d}.txt").write_text(f"synthetic photo {index}")


def _crop_widgets() -> dict:
    from hypernet_studio.nodes.dataset import AutoCropNode

    widgets = {name: [options["default"]] for name, (_, options) in AutoCropNode.INPUT_TYPES()["required"].items()
               if "default" in options}
    widgets.update(method=["focal"], face_detector=["auto"], face_model=[""])
    return widgets


# name -> (Auto Crop widgets changed, OpenCV's own thread count or None for its default). The
# pack leaves OpenCV at its default, which already spreads one Haar detection over the cores: the
# pinned variant shows the pool's scaling from a one-core start, the faceless one without Haar.
VARIANTS: dict[str, tuple[dict, Any]] = {
    "focal": ({}, None),
    "focal_no_faces": ({"face_weight": [0.0]}, None),
    "focal_opencv_pinned_to_1_thread": ({}, 1),
}


def run_prep(folder: Path, workers: int, crop_changes: Any = None) -> dict:
    """Load Images -> focal Auto Crop through the nodes with `workers`; seconds per stage."""
    from hypernet_studio.nodes.dataset import AutoCropNode, LoadImagesNode

    os.environ["HYPERNET_STUDIO_WORKERS"] = str(workers)
    start = time.perf_counter()
    images, masks, captions, stems, count, _chunk = LoadImagesNode().load(
        str(folder), False, ".txt", False, 0, 0, "white", 100.0)["result"]
    loaded = time.perf_counter()
    widgets = {**_crop_widgets(), **(crop_changes or {})}
    crops = AutoCropNode().crop(images, captions, masks, stems, **widgets)["result"][0]
    end = time.perf_counter()
    assert count == len(crops)
    return {"load": loaded - start, "crop": end - loaded, "total": end - start}


# --------------------------------------------------------------------------- jobs, threads vs processes
_DETECTOR: Any = None


def _focal_job(picture: Any) -> tuple:
    """Plan one focal crop (a process keeps one face detector, as a thread borrows one)."""
    from hypernet_studio.hypernet.preprocess.crop import CropSettings, plans_for_image
    from hypernet_studio.hypernet.preprocess.faces import FaceDetector

    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = FaceDetector("auto")
    plans, _ = plans_for_image(picture, CropSettings(), _DETECTOR)
    return plans[0].box


def _decode_job(path: Path) -> tuple:
    """Decode one file as Load Images does at its defaults."""
    from hypernet_studio.hypernet.preprocess.image_folder import MAX_SIDE_DEFAULT, decode_image

    return decode_image(path, max_side=MAX_SIDE_DEFAULT)


def _warm(_: int) -> int:
    """A trivial job that makes a spawned worker import the pack (it imports this module)."""
    return os.getpid()


def _timed_map(pool_class: type, workers: int, job: Callable, items: list) -> tuple[float, float]:
    """(seconds to start the pool and have every worker ready, seconds to map `job` over `items`
    in the ready pool). Threads start in no time; spawned processes import the pack first."""
    start = time.perf_counter()
    kwargs = {"mp_context": multiprocessing.get_context("spawn")} if pool_class is ProcessPoolExecutor else {}
    with pool_class(max_workers=workers, **kwargs) as pool:
        list(pool.map(_warm, range(workers)))
        ready = time.perf_counter()
        list(pool.map(job, items))
        done = time.perf_counter()
    return ready - start, done - ready


def compare_jobs(folder: Path, workers: int, repeats: int) -> dict:
    """Per job: one worker (in-process), `workers` threads, `workers` spawn processes."""
    from PIL import Image

    paths = sorted(folder.glob("*.jpg"))
    pictures = [Image.open(path).convert("RGB").resize((1536, 1024)) for path in paths]
    report = {}
    for name, job, items in (("decode", _decode_job, paths), ("focal_plan", _focal_job, pictures)):
        timings: dict[str, list[float]] = {"one": [], "threads": [], "processes": [], "process_pool_start": []}
        for _ in range(repeats):
            start = time.perf_counter()
            list(map(job, items))
            timings["one"].append(time.perf_counter() - start)
            timings["threads"].append(_timed_map(ThreadPoolExecutor, workers, job, items)[1])
            startup, mapped = _timed_map(ProcessPoolExecutor, workers, job, items)
            timings["processes"].append(mapped)
            timings["process_pool_start"].append(startup)
        medians = {kind: statistics.median(values) for kind, values in timings.items()}
        report[name] = {"seconds": {k: round(v, 3) for k, v in medians.items()},
                        "speedup_threads": round(medians["one"] / medians["threads"], 2),
                        "speedup_processes_ready_pool": round(medians["one"] / medians["processes"], 2)}
    return report


def _opencv_threads(count: Any) -> Any:
    """Set OpenCV's own thread count (None: leave it); the count it had, to restore."""
    try:
        import cv2
    except ImportError:
        return None
    before = cv2.getNumThreads()
    if count is not None:
        cv2.setNumThreads(count)
    return before


def compare_workers(folder: Path, cores: int, repeats: int, variants: list[str]) -> dict:
    """Per variant: median seconds per stage with 1 worker and with `cores`, runs alternating."""
    report = {}
    for name in variants:
        crop_changes, opencv_threads = VARIANTS[name]
        restore = _opencv_threads(opencv_threads)
        runs: dict[int, list[dict]] = {1: [], cores: []}
        for _ in range(repeats):
            for workers in runs:
                runs[workers].append(run_prep(folder, workers, crop_changes))
        _opencv_threads(restore)
        stages = {workers: {stage: statistics.median(run[stage] for run in values)
                            for stage in ("load", "crop", "total")} for workers, values in runs.items()}
        report[name] = {
            "seconds": {f"workers_{workers}": {k: round(v, 3) for k, v in values.items()}
                        for workers, values in stages.items()},
            "speedup": {stage: round(stages[1][stage] / stages[cores][stage], 2)
                        for stage in ("load", "crop", "total")}}
    return report


def measure(quick: bool = False, count: int = 0) -> dict:
    """The report: prep with 1 worker vs one per core (per variant), and the per-job pool comparison."""
    from hypernet_studio.hypernet.preprocess.workers import machine_cores

    count = count or (6 if quick else 24)
    repeats = 1 if quick else 3
    cores = machine_cores()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        write_photos(folder, count)
        run_prep(folder, cores)  # warm-up: imports, OpenCV cascades, file cache
        variants = compare_workers(folder, cores, repeats, ["focal"] if quick else list(VARIANTS))
        jobs = compare_jobs(folder, cores, repeats) if not quick else {}
    os.environ.pop("HYPERNET_STUDIO_WORKERS", None)
    return {
        "machine": {"platform": platform.platform(), "cores": cores, "python": platform.python_version(),
                    "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "note": "CPU only; GPU figures are not measured. Medians of alternating runs on the same photos; the "
                "machine may have been shared (see load_average_1min vs cores), so the ratios are what compare. "
                "speedup = seconds with 1 worker / seconds with one worker per core.",
        "photos": {"count": count, "size": list(PHOTO_SIZE), "load": "Load Images defaults (max_side 1536)",
                   "crop": "focal 512x512 at the node's defaults: Haar faces + entropy + edges"},
        "repeats": repeats,
        "speedup": variants["focal"]["speedup"]["total"],
        "variants": variants,
        "jobs_threads_vs_processes": jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 photos, one run each, no job comparison")
    parser.add_argument("--count", type=int, default=0, help="photos (default 24, quick 6)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULT_FILE.name}")
    args = parser.parse_args()
    report = measure(args.quick, args.count)
    text = json.dumps(report, indent=1)
    print(text)
    if not (args.quick or args.no_write):
        RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULT_FILE.write_text(text + "\n")


if __name__ == "__main__":
    main()
