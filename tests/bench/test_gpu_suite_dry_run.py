"""bench/gpu_suite.sh --dry-run: the prepared GPU suite, at tiny sizes on the CPU, so that it
still runs when someone gets a GPU. Slow (minutes): every part is a child process."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_suite_dry_run_passes_and_writes_no_gpu_figures(tmp_path):
    gpu_results = sorted((REPO / "bench" / "results").glob("gpu_suite_gpu.*"))
    before = {path: path.read_bytes() for path in gpu_results}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_suite.sh"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1500, env=dict(os.environ, PYTHON=sys.executable))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_suite_dry_run.json").read_text())
    assert report["dry_run"] and [row["ok"] for row in report["smoke"]] == [True] * 4
    contenders = {(row["part"], row.get("checkpointing"), row["contender"]) for row in report["measurements"]}
    assert {("train", False, "ours"), ("train", True, "ours"), ("train", False, "floor (bare UNet)"),
            ("apply", None, "applied, fused"), ("apply", None, "applied, unfused")} <= contenders
    assert all(row.get("s_per_step", row.get("s_per_image", 0)) > 0 for row in report["measurements"])
    # Peak GPU memory is not measured on the CPU, and the GPU results are left alone.
    assert "not measured" in (tmp_path / "gpu_suite_dry_run.md").read_text()
    assert {path: path.read_bytes() for path in gpu_results} == before
