"""Shared by the benchmarks (run as `python bench/NAME.py`): import the pack from this
checkout, and time calls."""
from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


def import_pack() -> None:
    """Make `import hypernet_studio` work: the installed package if there is one, else this
    checkout loaded under that name, as ComfyUI loads a custom-node folder."""
    if str(REPO.parent) not in sys.path:
        sys.path.insert(0, str(REPO.parent))
    try:
        import hypernet_studio  # noqa: F401
    except ImportError:
        spec = importlib.util.spec_from_file_location("hypernet_studio", REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["hypernet_studio"] = module
        spec.loader.exec_module(module)


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
