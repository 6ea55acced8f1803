"""The loss CSV with A1111's columns: step, epoch, epoch_step, loss, learn_rate (and val_loss after
them when the run validates: those rows are written at every validation, due or not).

A1111 appends a row when `step % every == 0`, with epoch = (step-1) // steps_per_epoch and
epoch_step = (step-1) % steps_per_epoch, loss formatted `.7f`. Rows are appended one at a time
(a long run writes each row once). A resumed run first rewrites the file once, atomically,
without the rows after the step it resumed from, so none is ever duplicated; a last line cut
short by a crash is dropped then too."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional, Union

from ..files import atomic_write_text

COLUMNS = ("step", "epoch", "epoch_step", "loss", "learn_rate")
Number = Union[int, float]


class LossCSV:
    """Rows of one training log, appended to `path` every `every` steps (0 = never)."""

    def __init__(self, path: Path, every: int, steps_per_epoch: int, resume_step: int = 0,
                 columns: tuple[str, ...] = COLUMNS):
        self.path, self.every, self.steps_per_epoch = Path(path), int(every), max(1, int(steps_per_epoch))
        self.columns = columns
        if self.every > 0:
            self._keep_rows_up_to(resume_step)

    def _keep_rows_up_to(self, resume_step: int) -> None:
        """Rewrite the file with the complete rows up to `resume_step` (only when it changes)."""
        if not self.path.exists():
            return
        with self.path.open(newline="", encoding="utf-8") as handle:
            text = handle.read()
        rows = list(csv.DictReader(io.StringIO(text)))
        kept = [{key: row.get(key) or "" for key in self.columns} for row in rows
                if _complete(row) and int(row["step"]) <= resume_step]
        header = ",".join(self.columns)
        if len(kept) != len(rows) or text.split("\n", 1)[0] != header or not text.endswith("\n"):
            atomic_write_text(self.path, _csv_text(kept, self.columns, header=True))

    def record(self, step: int, loss: float, learn_rate: float, val_loss: Optional[float] = None) -> bool:
        """Append the row for `step` if it is due (or holds a validation loss); True if written."""
        if self.every <= 0 or (step % self.every != 0 and val_loss is None):
            return False
        row = {"step": step, "epoch": (step - 1) // self.steps_per_epoch,
               "epoch_step": (step - 1) % self.steps_per_epoch, "loss": f"{loss:.7f}", "learn_rate": learn_rate}
        if "val_loss" in self.columns:
            row["val_loss"] = "" if val_loss is None else f"{val_loss:.7f}"
        new_file = not self.path.exists()
        if new_file:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            handle.write(_csv_text([row], self.columns, header=new_file))
        return True


def read_loss_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a loss CSV (none when it is missing); a half-written last line is skipped."""
    if not Path(path).is_file():
        return []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if _complete(row)]


def _complete(row: dict) -> bool:
    """A row with every column, its step a number (a crash can leave half a line)."""
    return all(row.get(column) not in (None, "") for column in COLUMNS) and str(row["step"]).isdigit()


def _csv_text(rows: list[dict], columns: tuple[str, ...], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
