"""Peak memory of preparing a big folder in chunks against the folder's size (CPU, headless).

    python bench/scale_chunked_prep.py [--quick]

Writes 4-MP photo-like JPEGs (2309x1732; 25 distinct ones, the rest hard links to them, so the
disk holds 25 while every file is decoded) to a temporary input folder, then runs, one fresh
child process per point, `hypernet-studio run --all-chunks` on workflows/dataset_prep_big.json
without its tagger (Load Images with chunk_size 100 -> Auto Crop center 512 -> Flip -> Save
Dataset) and reads the child's peak RSS (ru_maxrss). Points: the chunked prep of 100 and of 1000
photos, and the unchunked path (chunk_size 0) of 100 for comparison.
Target (issue 19): peak(1000 photos) <= 1.2 x peak(100 photos).
Prints the result as JSON and writes bench/results/scale_chunked_prep_cpu.json and .md.
`--quick` (smaller photos, 20 vs 60 in chunks of 20) only checks that the bench runs.
CPU only: the prep runs on the CPU; no GPU figure is measured here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, import_pack, write_results

FOLDER, DISTINCT, TARGET_RATIO = "big_photos", 25, 1.2
FULL = {"size": (2309, 1732), "counts": (100, 1000), "chunk_size": 100, "crop": 512}
QUICK = {"size": (800, 600), "counts": (20, 60), "chunk_size": 20, "crop": 256}


def write_photos(folder: Path, count: int, width: int, height: int) -> None:
    """`count` JPEG files: DISTINCT photo-like ones (gradients, texture, noise), the rest links."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([255 * x / width, 255 * y / height, 128 + 90 * np.sin(x / 23.0) * np.cos(y / 31.0)], -1)
    noise = np.random.default_rng(0).normal(0, 8, base.shape).astype(np.float32)
    for index in range(count):
        path = folder / f"photo_{index:04d}.jpg"
        if index >= DISTINCT:
            _link(folder / f"photo_{index % DISTINCT:04d}.jpg", path)
            continue
        tint = np.array([(index * 37) % 64, (index * 53) % 64, (index * 71) % 64], np.float32)
        pixels = np.clip(np.roll(base, index * 97, axis=1) + np.roll(noise, index * 13, axis=0) + tint - 32, 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)


def _link(source: Path, path: Path) -> None:
    try:
        os.link(source, path)
    except OSError:  # a file system without hard links
        path.write_bytes(source.read_bytes())


def prep_workflow(path: Path, crop: int) -> None:
    """workflows/dataset_prep_big.json as an API prompt without the tagger (captions from Flip)."""
    from hypernet_studio.runtime.registry import build_registry
    from hypernet_studio.runtime.workflow import load_workflow

    registry = build_registry(include_standins=True)[0]
    prompt, _ = load_workflow(REPO / "workflows" / "dataset_prep_big.json", registry)
    ids = {node["class_type"]: node_id for node_id, node in prompt.items()}
    del prompt[ids["HN_DeepbooruTag"]]
    prompt[ids["HN_SaveDataset"]]["inputs"]["captions"] = [ids["HN_Flip"], 2]  # Flip's captions
    prompt[ids["HN_AutoCrop"]]["inputs"].update(method="center", width=crop, height=crop, face_weight=0.0)
    prompt[ids["HN_LoadImages"]]["inputs"]["folder"] = FOLDER
    path.write_text(json.dumps(prompt))


def child(base: Path, workflow: Path, count: int, chunk_size: int) -> None:
    """One point, in this fresh process: the prep of `count` photos; prints peak RSS as JSON."""
    from hypernet_studio.runtime import cli

    started = time.perf_counter()
    ids = {node["class_type"]: node_id for node_id, node in json.loads(workflow.read_text()).items()}
    loader, save = ids["HN_LoadImages"], ids["HN_SaveDataset"]
    code = cli.main(["run", str(workflow), "--base-dir", str(base), "--quiet", "--all-chunks",
                     "--set", f"{loader}.limit={count}", "--set", f"{loader}.chunk_size={chunk_size}",
                     "--set", f"{loader}.chunk=0", "--set", f"{save}.folder=prepared_{count}_{chunk_size}"])
    written = len(list((base / "output" / f"prepared_{count}_{chunk_size}").glob("*.png")))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"photos": count, "chunk_size": chunk_size, "exit_code": code, "pngs_written": written,
                      "peak_rss_mib": round(peak_kib / 1024, 1), "seconds": round(time.perf_counter() - started, 1)}))


def run_point(base: Path, workflow: Path, count: int, chunk_size: int) -> dict:
    command = [sys.executable, __file__, "--child", str(base), str(workflow), str(count), str(chunk_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"point {count} photos, chunk_size {chunk_size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()}, CPU only (no GPU)"


def measure(quick: bool = False) -> dict:
    """Peak RSS of the chunked prep at the small and the large count, and of the unchunked path
    at the small count; ratio = peak(large) / peak(small), chunked."""
    import_pack()
    setting = QUICK if quick else FULL
    small, large = setting["counts"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        write_photos(base / "input" / FOLDER, large, *setting["size"])
        workflow = base / "prep.json"
        prep_workflow(workflow, setting["crop"])
        points = [run_point(base, workflow, count, size) for count, size in
                  ((small, setting["chunk_size"]), (large, setting["chunk_size"]), (small, 0))]
    ratio = points[1]["peak_rss_mib"] / points[0]["peak_rss_mib"]
    width, height = setting["size"]
    return {"machine": machine(), "python": platform.python_version(), "quick": quick,
            "photos": f"{width}x{height} JPEG (quality 90), {DISTINCT} distinct, the rest hard links",
            "graph": f"Load Images (chunk_size {setting['chunk_size']}, max_side default) -> Auto Crop (center, "
                     f"{setting['crop']}) -> Flip (append) -> Save Dataset, `run --all-chunks`",
            "points": points, "chunked_ratio": round(ratio, 3), "target_ratio": TARGET_RATIO,
            "target_met": ratio <= TARGET_RATIO, "seconds": round(time.perf_counter() - started, 1)}


def markdown(result: dict) -> str:
    chunked = [p for p in result["points"] if p["chunk_size"]]
    whole = [p for p in result["points"] if not p["chunk_size"]]
    lines = ["# Preparing a big folder in chunks: peak memory (CPU, headless)", "",
             f"Machine: {result['machine']}. Photos: {result['photos']}.", f"Graph: {result['graph']}.",
             f"One fresh process per point; peak RSS is the child's ru_maxrss. Whole run: {result['seconds']} s.", "",
             "| path | photos | PNGs written | peak RSS | seconds |", "|---|---|---|---|---|"]
    for point in chunked + whole:
        path = f"chunks of {point['chunk_size']}" if point["chunk_size"] else "unchunked (chunk_size 0)"
        lines.append(f"| {path} | {point['photos']} | {point['pngs_written']} | {point['peak_rss_mib']:.0f} MiB | "
                     f"{point['seconds']} |")
    verdict = "met" if result["target_met"] else "NOT met"
    lines += ["", f"Chunked peak({chunked[1]['photos']}) / peak({chunked[0]['photos']}) = {result['chunked_ratio']} "
                  f"(target <= {result['target_ratio']}: {verdict})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import_pack()
        child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small photos and counts: checks the bench runs")
    result = measure(parser.parse_args().quick)
    if not result["quick"]:
        write_results("scale_chunked_prep_cpu", result, markdown(result))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
