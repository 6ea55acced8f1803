"""Shared by the benchmarks (run as `python bench/NAME.py`): import the pack from this
checkout, time calls, read this process's memory, and write bench/results/."""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def import_pack() -> None:
    """Make `import hypernet_studio` work: the installed package if there is one, else this
    checkout loaded under that name, as ComfyUI loads a custom-node folder; then install the host
    the nodes run against (importing installs none)."""
    if str(REPO.parent) not in sys.path:
        sys.path.insert(0, str(REPO.parent))
    try:
        import hypernet_studio  # noqa: F401
        if Path(hypernet_studio.__file__).resolve().parent != REPO:
            # another checkout is installed (e.g. `pip install -e` of a different worktree):
            # measure this one, as tests/conftest.py does
            for name in [name for name in sys.modules if name.split(".")[0] == "hypernet_studio"]:
                del sys.modules[name]
            raise ImportError(hypernet_studio.__file__)
    except ImportError:
        spec = importlib.util.spec_from_file_location("hypernet_studio", REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["hypernet_studio"] = module
        spec.loader.exec_module(module)
    sys.modules["hypernet_studio"].install_host()


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median wall time of `repeats` calls, after one untimed warm-up call unless told not to."""
    if warmup:
        fn()
    return statistics.median(seconds(fn) for _ in range(repeats))


RESULTS = REPO / "bench" / "results"


def status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Restart the VmHWM high-water mark from the current RSS (so a model build's own transient
    peak does not hide the peak of what is measured next)."""
    Path("/proc/self/clear_refs").write_text("5")


def write_results(stem: str, report: dict, markdown: str) -> None:
    """bench/results/STEM.json (the report) and STEM.md (its table)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown)
