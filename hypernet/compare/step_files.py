"""Which files of a training run's folder to compare.

Train Hypernet writes run NAME's step files into its log folder `.../hypernet_training/NAME/` as
NAME-STEP.pt (each with a NAME-STEP.pt.optim beside it), and NAME-best.pt when it validates (see
train/run_files.py and train/resume_files.py). A numbered re-run NAME_00001 has its own folder and
name, so NAME is the folder's name. A file is NAME's only when its whole name is NAME-<digits>.pt:
in folder "cat", "cat-1-100.pt" is step 100 of a run named "cat-1", never step 1-100 of "cat"."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..train.resume_files import stored_step

STEP_FILE_SUFFIX = ".pt"
BEST_SUFFIX = "best"  # NAME-best.pt: the network at the lowest validation loss


def step_of(path: Path, run_name: str) -> Optional[int]:
    """STEP when `path` is named `run_name`-STEP.pt, else None."""
    match = re.fullmatch(rf"{re.escape(run_name)}-(\d+){re.escape(STEP_FILE_SUFFIX)}", Path(path).name)
    return int(match.group(1)) if match else None


def best_file(folder: Path) -> Path:
    """Where the run in `folder` keeps its best network (it may not exist)."""
    return Path(folder) / f"{Path(folder).name}-{BEST_SUFFIX}{STEP_FILE_SUFFIX}"


def step_files(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every step file of the run in `folder`, in step order."""
    name = Path(folder).name
    found = [(step, path) for path in Path(folder).iterdir()
             if path.is_file() and (step := step_of(path, name)) is not None]
    return sorted(found)


def select_step_files(folder: Path, every_nth: int, *, input_name: str = "run",
                      final_file: Optional[Path] = None) -> list[Path]:
    """Every `every_nth` step file in step order (the Nth, the 2Nth...), always the last, then
    NAME-best.pt when the run wrote one. With a save every 500 steps, every_nth 4 picks steps 2000,
    4000... and the run's last step file. The run's last step is in its final file only when
    `steps` is no multiple of save_every: `final_file` (models/hypernetworks/NAME.pt), when given
    and later than every step file, comes after them."""
    if isinstance(every_nth, bool) or not isinstance(every_nth, int) or every_nth < 1:
        raise InputError("every_nth", f"{every_nth!r}: give a whole number of at least 1 (1 = every step file)")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(input_name, f"{folder} is not a folder: name a run's folder under hypernet_training")
    steps = step_files(folder)
    if not steps:
        raise InputError(input_name, f"{folder} holds no step file {folder.name}-STEP{STEP_FILE_SUFFIX}: "
                                     "a run writes them when save_every is above 0")
    chosen = [path for _, path in steps[every_nth - 1::every_nth]]
    if not chosen or chosen[-1] != steps[-1][1]:
        chosen.append(steps[-1][1])
    if final_file is not None and Path(final_file).is_file():
        final_step = stored_step(final_file)
        if final_step is not None and final_step > steps[-1][0]:
            chosen.append(Path(final_file))
    best = best_file(folder)
    return chosen + [best] if best.is_file() else chosen
