"""Where a run writes, chosen so that a re-run never silently replaces an earlier result.

A run named NAME writes `models/.../NAME.pt` and a log folder `.../NAME/` (step files, previews,
CSV, loss curve). If those hold results this run would replace, the run takes the next free name,
NAME_00001, NAME_00002..., as Save Hypernet does, unless `overwrite` is on. Continuing a network
from this very run's files is not a replacement: a run resumed from `NAME-500.pt` writes on in
NAME as long as nothing there holds a later step. Any other name is taken only when it is wholly
free: no final file, no `.optim`, no log folder with anything in it; so a second resume of the
same step file never lands in a numbered run it did not start from."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..files import safe_join
from ..safe_load import UnreadableFile, load_torch_weights
from .resume_files import optimizer_state_path

MAX_RUN_NUMBER = 99_999


@dataclass(frozen=True)
class RunFolders:
    """Where runs go: the final files' folder and the folder holding each run's log folder."""

    models_folder: Path
    log_root: Path
    overwrite: bool = False


@dataclass(frozen=True)
class RunFiles:
    """The name one run writes under (NAME, or NAME_00001 when NAME has earlier results)."""

    name: str
    final_path: Path
    log_dir: Path


def run_files(folders: RunFolders, name: str, start_step: int = 0,
              starting_file: Optional[str] = None) -> RunFiles:
    """NAME's files, or the first numbered name whose files this run would not replace."""
    for number in range(MAX_RUN_NUMBER + 1):
        candidate = name if number == 0 else f"{name}_{number:05d}"
        files = RunFiles(candidate, safe_join(folders.models_folder, f"{candidate}.pt"),
                         safe_join(folders.log_root, candidate))
        if folders.overwrite or not would_replace(files, start_step, starting_file):
            return files
    raise FileExistsError(f"{name}: every name up to {name}_{MAX_RUN_NUMBER:05d} holds earlier results")


def would_replace(files: RunFiles, start_step: int, starting_file: Optional[str]) -> bool:
    """True when a run from `start_step` would overwrite a result held under `files`."""
    if not _continues(files, starting_file):
        return _holds_anything(files)
    if _final_file_is_later(files.final_path, start_step, starting_file):
        return True
    if not files.log_dir.is_dir():
        return False
    later = re.compile(rf"^{re.escape(files.name)}-(\d+)\.(pt|png)$")
    return any(int(match.group(1)) > start_step for path in files.log_dir.rglob("*")
               if (match := later.match(path.name)))


def _continues(files: RunFiles, starting_file: Optional[str]) -> bool:
    """The starting file is this run's own: its final file or a file in its log folder."""
    if not starting_file:
        return False
    start = Path(starting_file).resolve()
    return start == files.final_path.resolve() or files.log_dir.resolve() in start.parents


def _holds_anything(files: RunFiles) -> bool:
    """Any file of the run exists: the final file, its `.optim`, or anything in the log folder."""
    if files.final_path.exists() or optimizer_state_path(files.final_path).exists():
        return True
    return files.log_dir.is_dir() and any(files.log_dir.iterdir())


def _final_file_is_later(final: Path, start_step: int, starting_file: Optional[str]) -> bool:
    """The final file exists and holds more than the step this run starts from."""
    if not final.is_file():
        return False
    if starting_file and Path(starting_file).resolve() == final.resolve():
        return False
    try:
        stored = load_torch_weights(final, "a hypernetwork")
    except UnreadableFile:
        return True
    return not isinstance(stored, dict) or int(stored.get("step") or 0) > start_step
