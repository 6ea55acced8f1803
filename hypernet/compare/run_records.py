"""What a training run recorded about the files it wrote, for the grid's labels and the table.

A run's folder holds its loss CSV (train/csvlog.py: val_loss at every validation when it
validates), NAME-best.pt (the network at the lowest validation loss; the file records its step) and
run_summary.json, written at the end of every run with the keys of RunSummary (null when unknown).
Nothing here is required: a file no run recorded anything about still gets a record, with None
where nothing is known, so any hypernetwork file can be compared."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..file_format import HypernetFileError
from ..files import UnsafePathError, safe_join
from ..train.csvlog import read_loss_rows
from ..train.resume_files import read_optimizer_state, stored_step
from .step_files import best_file, step_of

logger = logging.getLogger(__name__)

RUN_SUMMARY_FILE = "run_summary.json"
LOSS_CSV_FILE = "hypernetwork_loss.csv"


@dataclass(frozen=True)
class RunSummary:
    """One run at a glance, as its run_summary.json says (None: not recorded)."""

    spec: Optional[str] = None
    parameters: Optional[int] = None
    steps: Optional[int] = None
    final_loss: Optional[float] = None
    best_val_loss: Optional[float] = None
    best_val_step: Optional[int] = None
    seconds_per_step: Optional[float] = None


@dataclass(frozen=True)
class NetworkRecord:
    """One network to compare: its name (the file's stem), file, step, validation loss at that
    step, whether it is the run's best, and its run's folder and summary."""

    name: str
    path: Optional[Path] = None
    step: Optional[int] = None
    val_loss: Optional[float] = None
    is_best: bool = False
    run_folder: Optional[Path] = None
    summary: Optional[RunSummary] = None
    file_size: Optional[int] = None


def _whole(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, float) and value.is_integer() else None


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summary_from(values: Mapping[str, Any]) -> RunSummary:
    """A RunSummary from run_summary.json's mapping; a missing key or a value of the wrong type is None."""
    spec = values.get("spec")
    return RunSummary(spec=spec if isinstance(spec, str) else None, parameters=_whole(values.get("parameters")),
                      steps=_whole(values.get("steps")), final_loss=_number(values.get("final_loss")),
                      best_val_loss=_number(values.get("best_val_loss")),
                      best_val_step=_whole(values.get("best_val_step")),
                      seconds_per_step=_number(values.get("seconds_per_step")))


def read_run_summary(folder: Path) -> Optional[RunSummary]:
    """The run's summary, or None when the folder has no readable run_summary.json."""
    path = Path(folder) / RUN_SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        logger.warning("%s: not readable as JSON (%s); comparing without it", path, exc)
        return None
    if not isinstance(values, dict):
        logger.warning("%s: not a JSON object; comparing without it", path)
        return None
    return summary_from(values)


def read_val_losses(folder: Path) -> dict[int, float]:
    """Step -> validation loss, from the rows of the run's loss CSV that hold one."""
    losses = {}
    for row in read_loss_rows(Path(folder) / LOSS_CSV_FILE):
        try:
            value = float(row.get("val_loss") or "")
        except ValueError:
            continue
        if math.isfinite(value):
            losses[int(row["step"])] = value
    return losses


@dataclass(frozen=True)
class _RunLog:
    """What one run folder recorded, read once for all its files."""

    folder: Path
    val_losses: dict[int, float]
    best_step: Optional[int]
    summary: Optional[RunSummary]


def _read_run_log(folder: Path) -> _RunLog:
    """The folder's validation losses, summary and best step: the step NAME-best.pt records, else
    the summary's, else the step of the lowest validation loss in the CSV. The best's loss is
    known even without a CSV (csv_every 0): NAME-best.pt's .optim and the summary record it."""
    val_losses, summary = read_val_losses(folder), read_run_summary(folder)
    best = best_file(folder)
    best_step = stored_step(best) if best.is_file() else None
    if best_step is not None and best_step not in val_losses:
        _add_loss(val_losses, best_step, _recorded_best_loss(best))
    if summary is not None and summary.best_val_step is not None and summary.best_val_step not in val_losses:
        _add_loss(val_losses, summary.best_val_step, summary.best_val_loss)
    if best_step is None and summary is not None:
        best_step = summary.best_val_step
    if best_step is None and val_losses:
        best_step = min(val_losses, key=lambda step: (val_losses[step], step))
    return _RunLog(Path(folder), val_losses, best_step, summary)


def _add_loss(val_losses: dict[int, float], step: int, value: Optional[float]) -> None:
    if value is not None and math.isfinite(value):
        val_losses[step] = value


def _recorded_best_loss(best: Path) -> Optional[float]:
    """The validation loss NAME-best.pt's .optim records (None when it is missing or stale)."""
    try:
        payload = read_optimizer_state(best)
    except (HypernetFileError, OSError) as exc:
        logger.warning("%s: %s; comparing without its validation loss", best, exc)
        return None
    return _number(payload.get("val_loss")) if payload else None


def _record(path: Path, log: Optional[_RunLog]) -> NetworkRecord:
    path = Path(path)
    size = path.stat().st_size if path.is_file() else None
    if log is None:
        return NetworkRecord(path.stem, path, stored_step(path) if path.is_file() else None, file_size=size)
    is_best_file = path.name == best_file(log.folder).name
    step = step_of(path, log.folder.name)
    if step is None and path.is_file():
        step = stored_step(path)
    val_loss = log.val_losses.get(step) if step is not None else None
    is_best = is_best_file or (step is not None and step == log.best_step)
    return NetworkRecord(path.stem, path, step, val_loss, is_best, log.folder, log.summary, size)


def network_record(path: Path, run_folder: Optional[Path]) -> NetworkRecord:
    """What `run_folder` (None: no run known) recorded about the network file `path`."""
    return _record(path, _read_run_log(run_folder) if run_folder is not None else None)


def run_records(folder: Path, paths: Sequence[Path]) -> list[NetworkRecord]:
    """network_record() for many files of the run in `folder`, reading its records once."""
    log = _read_run_log(folder)
    return [_record(path, log) for path in paths]


def unrecorded_network(name: str, step: Optional[int] = None) -> NetworkRecord:
    """A network known only by a name (a HYPERNETWORK input that was never saved to a file)."""
    return NetworkRecord(name, step=step)


def run_folder_of(network_file: Path, training_root: Path) -> Optional[Path]:
    """The run folder that recorded `network_file`: its own folder when it lies under
    `training_root`; for a final file STEM.pt elsewhere (models/hypernetworks), training_root/STEM
    when that folder exists; else None."""
    network_file, root = Path(network_file).resolve(), Path(training_root).resolve()
    if root in network_file.parents:
        return network_file.parent
    try:
        candidate = safe_join(root, network_file.stem)
    except UnsafePathError:  # a stem such as ".." (from "...pt") names no run
        return None
    return candidate if candidate.parent == root and candidate.is_dir() else None
