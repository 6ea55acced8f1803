"""The comparison's table: one row per line of the grid (network x strength) with its step and
validation loss, and, when the networks come from several runs (a spec sweep), each run's summary
beside it: spec, parameters, file size, steps, final loss, best validation loss and its step,
seconds per step. As text for the node and as a CSV written beside the grid."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ..files import atomic_write_text
from .grid_plan import BASE_MODEL_LABEL, GridPlan, format_loss
from .run_records import NetworkRecord, RunSummary

Cell = Union[str, int, float, None]

COLUMNS = ("network", "step", "strength", "val_loss", "best")
SWEEP_COLUMNS = ("spec", "parameters", "file_size", "steps", "final_loss", "best_val_loss", "best_val_step",
                 "seconds_per_step")
MISSING_TEXT = "-"  # a value nothing recorded, in the text table (the CSV leaves it empty)


@dataclass(frozen=True)
class TableRow:
    """One line of the grid: a network (or the base model) at one strength."""

    network: str
    step: Optional[int]
    strength: float
    val_loss: Optional[float]
    best: bool
    summary: Optional[RunSummary] = None
    file_size: Optional[int] = None

    def values(self, sweep: bool) -> dict[str, Cell]:
        """The row's raw values by column name (COLUMNS, then SWEEP_COLUMNS when `sweep`)."""
        values: dict[str, Cell] = {"network": self.network, "step": self.step, "strength": self.strength,
                                   "val_loss": self.val_loss, "best": "best" if self.best else None}
        if sweep:
            summary = self.summary or RunSummary()
            values.update(spec=summary.spec, parameters=summary.parameters, file_size=self.file_size,
                          steps=summary.steps, final_loss=summary.final_loss, best_val_loss=summary.best_val_loss,
                          best_val_step=summary.best_val_step, seconds_per_step=summary.seconds_per_step)
        return values


def table_rows(plan: GridPlan, networks: Sequence[NetworkRecord]) -> list[TableRow]:
    """One row per line of `plan`, in its order."""
    rows = []
    for index, strength in plan.lines():
        if index is None:
            rows.append(TableRow(BASE_MODEL_LABEL, None, strength, None, False))
            continue
        network = networks[index]
        rows.append(TableRow(network.name, network.step, strength, network.val_loss, network.is_best,
                             network.summary, network.file_size))
    return rows


def shows_sweep(networks: Sequence[NetworkRecord]) -> bool:
    """True when the networks come from more than one run (a file no run folder recorded counts as
    a run of its own): then the table compares the runs' summaries too."""
    runs = {network.run_folder or network.path or network.name for network in networks}
    return len(runs) > 1


def _number_text(write: Callable[[float], str]) -> Callable[[Cell], str]:
    """A formatter writing a number with `write`, and MISSING_TEXT for anything else."""
    return lambda value: write(float(value)) if isinstance(value, (int, float)) else MISSING_TEXT


TEXT_FORMATS: dict[str, Callable[[Cell], str]] = {
    "strength": _number_text(lambda value: f"{value:g}"),
    "val_loss": _number_text(format_loss),
    "final_loss": _number_text(format_loss),
    "best_val_loss": _number_text(format_loss),
    "seconds_per_step": _number_text(lambda value: f"{value:.3g}"),
    "parameters": _number_text(lambda value: f"{int(value):,}"),
    "file_size": _number_text(lambda size: f"{size / 1e6:.2f} MB"),
}


def _text(column: str, value: Cell) -> str:
    if column in TEXT_FORMATS:
        return TEXT_FORMATS[column](value)
    return MISSING_TEXT if value is None else str(value)


def table_text(rows: Sequence[TableRow], sweep: bool) -> str:
    """The table as aligned plain text: a header line, then one line per row."""
    columns = COLUMNS + SWEEP_COLUMNS if sweep else COLUMNS
    body = [[_text(column, row.values(sweep)[column]) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in [list(columns), *body]) for i in range(len(columns))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip()
                     for line in [list(columns), *body])


def table_csv(rows: Sequence[TableRow], sweep: bool) -> str:
    """The table as CSV: raw numbers (file size in bytes), empty where nothing was recorded."""
    columns = COLUMNS + SWEEP_COLUMNS if sweep else COLUMNS
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.values(sweep).items()}
                     for row in rows)
    return buffer.getvalue()


def write_table_csv(rows: Sequence[TableRow], sweep: bool, path: Path) -> Path:
    """Write table_csv() to `path` atomically."""
    return atomic_write_text(path, table_csv(rows, sweep))
