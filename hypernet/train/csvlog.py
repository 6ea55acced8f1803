"""The loss CSV with A1111's columns: step, epoch, epoch_step, loss, learn_rate.

A1111 appends a row when `step % every == 0`, with epoch = (step-1) // steps_per_epoch and
epoch_step = (step-1) % steps_per_epoch, loss formatted `.7f`. We rewrite the whole file
atomically instead of appending, so that a resumed run first drops the rows after the step
it resumed from and never duplicates them."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..files import atomic_write_text

COLUMNS = ("step", "epoch", "epoch_step", "loss", "learn_rate")


class LossCSV:
    """Rows of one training log, written to `path` every `every` steps (0 = never)."""

    def __init__(self, path: Path, every: int, steps_per_epoch: int, resume_step: int = 0):
        self.path, self.every, self.steps_per_epoch = Path(path), int(every), max(1, int(steps_per_epoch))
        self.rows: list[dict] = []
        if self.every > 0 and self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as handle:
                self.rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resume_step]

    def record(self, step: int, loss: float, learn_rate: float) -> bool:
        """Add the row for `step` if it is due and rewrite the file; True if written."""
        if self.every <= 0 or step % self.every != 0:
            return False
        self.rows.append({"step": step, "epoch": (step - 1) // self.steps_per_epoch,
                          "epoch_step": (step - 1) % self.steps_per_epoch,
                          "loss": f"{loss:.7f}", "learn_rate": learn_rate})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())
        return True
