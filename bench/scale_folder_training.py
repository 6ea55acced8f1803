"""Peak memory of training from a folder against the number of pictures (CPU, headless).

    python bench/scale_folder_training.py [--quick]

Writes synthetic photo-like 4 MP JPEGs (2309x1732, bench_dataset_memory.write_photos) once, then
runs, in a fresh child process per point, Load Training Set -> Train Hypernet (built-in tiny
model, 256 px training, 3 steps) on 100 and 400 of them, and for comparison the in-memory path,
Load Images -> Train Hypernet, on 10 and 40 (it holds every picture, tens of MB each; both at
max_side 1536, the default). Each child reports its peak RSS (ru_maxrss). The figure is the growth
per added picture: (peak(N2) - peak(N1)) / (N2 - N1); the target for the folder path is <= 0.5 MB.
measure() returns the report (the lead's bench_dataset_scale.py collects it); this script prints it
as JSON.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO  # noqa: E402

FOLDER_COUNTS, MEMORY_COUNTS = (100, 400), (10, 40)
QUICK_FOLDER_COUNTS, QUICK_MEMORY_COUNTS = (10, 40), (5, 10)
RESOLUTION, STEPS, MAX_SIDE = 256, 3, 1536
TARGET_MB_PER_PICTURE = 0.5


def import_this_checkout() -> None:
    """`hypernet_studio` from this checkout even where another one is installed (a worktree), with
    the headless host installed, as _common.import_pack does for the installed one."""
    if "hypernet_studio" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hypernet_studio", REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["hypernet_studio"] = module
        spec.loader.exec_module(module)
        module.install_host()


def _prompt(path: str, count: int) -> dict:
    """Tiny model -> Train Hypernet fed by Load Training Set (`path` "folder") or Load Images ("memory")."""
    from hypernet_studio.runtime.registry import build_registry

    registry = build_registry(include_standins=True)[0]
    declared = registry["HN_TrainHypernet"].INPUT_TYPES()
    train = {name: spec[1]["default"] for group in ("required", "optional") for name, spec in declared[group].items()
             if "default" in spec[1]}
    train.update(model=["1", 0], clip=["1", 1], vae=["1", 2], hypernet_spec=["2", 0], name="bench-folder",
                 steps=STEPS, learning_rate="0.0001", resolution=RESOLUTION, save_every=0, preview_every=0,
                 csv_every=0, overwrite=True)
    declared = registry["HN_HypernetSpec"].INPUT_TYPES()["required"]
    spec = {name: entry[1].get("default") for name, entry in declared.items()}
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd (built-in)"}},
              "2": {"class_type": "HN_HypernetSpec", "inputs": spec}}
    folder = f"photos_{count}"
    if path == "folder":
        prompt["3"] = {"class_type": "HN_LoadTrainingSet", "inputs": {
            "folder": folder, "caption_extension": ".txt", "background": "white", "max_side": MAX_SIDE,
            "max_megapixels": 100.0}}
        train.update(training_set=["3", 0])
    else:
        prompt["3"] = {"class_type": "HN_LoadImages", "inputs": {
            "folder": folder, "recursive": False, "caption_extension": ".txt", "kohya_repeats": False, "offset": 0,
            "limit": 0, "background": "white", "max_megapixels": 100.0, "max_side": MAX_SIDE}}
        train.update(images=["3", 0], masks=["3", 1], captions=["3", 2])
    prompt["4"] = {"class_type": "HN_TrainHypernet", "inputs": train}
    return prompt


def _child(base: Path, path: str, count: int) -> None:
    """One point, in this fresh process: run the graph, print its peak RSS and time as JSON."""
    import resource

    import torch

    torch.set_num_threads(1)
    from hypernet_studio.runtime.api import run_prompt

    started = time.perf_counter()
    run_prompt(_prompt(path, count), base_dir=base)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    # What the run still holds at its end (the trained set's latents among it): the peak may be set
    # before the pictures matter (the model's build), this shows what grows with them.
    print(json.dumps({"path": path, "pictures": count, "peak_rss_mb": round(peak_kib * 1024 / 1e6, 1),
                      "rss_after_mb": round(_rss_kib() * 1024 / 1e6, 1),
                      "seconds": round(time.perf_counter() - started, 1)}))


def _rss_kib() -> int:
    """This process's resident memory now (VmRSS, Linux), 0 where /proc does not say."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.is_file() else []
    return next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)


def _point(base: Path, path: str, count: int) -> dict:
    command = [sys.executable, __file__, "--child", str(base), path, str(count)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{path} with {count} pictures failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_sets(base: Path, counts: list[int]) -> None:
    """input/photos_N for every N: the first N of one set of photos (hard links where possible)."""
    from bench_dataset_memory import write_photos

    source = base / "photos_all"
    write_photos(source, max(counts), 2309, 1732)
    photos = sorted(source.glob("*.jpg"))
    for count in counts:
        folder = base / "input" / f"photos_{count}"
        folder.mkdir(parents=True)
        for photo in photos[:count]:
            try:
                os.link(photo, folder / photo.name)
            except OSError:
                (folder / photo.name).write_bytes(photo.read_bytes())
            (folder / photo.with_suffix(".txt").name).write_text(f"a photo, number {photo.stem}")


def _growth(points: list[dict], key: str = "peak_rss_mb") -> float:
    """MB of `key` per added picture between the first and the last point."""
    first, last = points[0], points[-1]
    return round((last[key] - first[key]) / (last["pictures"] - first["pictures"]), 3)


def measure(quick: bool = False) -> dict:
    """Peak RSS of training from a folder at two picture counts, and of the in-memory path."""
    import_this_checkout()
    folder_counts = QUICK_FOLDER_COUNTS if quick else FOLDER_COUNTS
    memory_counts = QUICK_MEMORY_COUNTS if quick else MEMORY_COUNTS
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        _write_sets(base, sorted({*folder_counts, *memory_counts}))
        folder = [_point(base, "folder", count) for count in folder_counts]
        memory = [_point(base, "memory", count) for count in memory_counts]
    growth = _growth(folder)
    return {"what": f"peak RSS, Load Training Set -> Train Hypernet vs Load Images -> Train Hypernet; tiny-sd, "
                    f"{RESOLUTION} px training, {STEPS} steps, 2309x1732 JPEGs (4 MP), max_side {MAX_SIDE}; one "
                    "fresh process per point (ru_maxrss), CPU",
            "folder": folder, "in_memory": memory,
            "folder_mb_per_added_picture": growth, "in_memory_mb_per_added_picture": _growth(memory),
            "folder_held_mb_per_added_picture": _growth(folder, "rss_after_mb"),
            "target_mb_per_added_picture": TARGET_MB_PER_PICTURE, "meets_target": growth <= TARGET_MB_PER_PICTURE,
            "quick": quick, "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        import_this_checkout()
        _child(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
