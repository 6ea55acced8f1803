"""The loss curve as a picture (matplotlib, Agg): the loss per step and its moving average, the
validation loss when there is one, and the learning rate on a second axis, with axis titles
and a legend, so that overfitting (training loss falling while validation loss rises) shows.

A continued run draws the whole run: the steps before it come from the run's loss CSV (one
point per CSV row), its own steps from what it trained. The moving average is the trailing mean
over the last tenth of the drawn steps (at least SMOOTHING_MIN_STEPS steps), counted in steps, not
points, so sparse CSV rows and per-step values weigh alike. The learning-rate axis starts at 0,
so a constant rate is a flat line, not a zoom into rounding."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from ..images import agg_figure, figure_image
from .config import TrainResult
from .csvlog import read_loss_rows

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

LEGEND = {"raw": "training loss (each step)", "smooth": "training loss (moving average)",
          "validation": "validation loss", "lr": "learning rate"}
SMOOTHING_SHARE = 0.1  # the moving average spans this share of the drawn steps
SMOOTHING_MIN_STEPS = 2
RATE_HEADROOM = 1.1  # the rate axis ends this much above the highest rate


@dataclass
class LossHistory:
    """The points to draw: training loss and learning rate per step, validation loss per step."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)  # one per step in `steps`, or none
    validation_steps: list[int] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)

    @classmethod
    def of_steps(cls, losses: Sequence[float], first_step: int = 1, learning_rates: Sequence[float] = (),
                 validation_steps: Sequence[int] = (), validation_losses: Sequence[float] = ()) -> "LossHistory":
        """One loss per step from `first_step` on."""
        return cls(list(range(first_step, first_step + len(losses))), list(losses), list(learning_rates),
                   list(validation_steps), list(validation_losses))

    @classmethod
    def of_run(cls, result: TrainResult) -> "LossHistory":
        """The whole run: the CSV's rows before `result.first_step`, then the steps `result` trained."""
        this_run = cls.of_steps(result.losses, result.first_step, result.learning_rates, result.validation_steps,
                                result.validation_losses)
        earlier = cls.from_csv(result.csv_path, before_step=result.first_step) if result.csv_path else cls()
        return cls(earlier.steps + this_run.steps, earlier.losses + this_run.losses,
                   earlier.learning_rates + this_run.learning_rates,
                   earlier.validation_steps + this_run.validation_steps,
                   earlier.validation_losses + this_run.validation_losses)

    @classmethod
    def from_csv(cls, path: Path, before_step: Optional[int] = None) -> "LossHistory":
        """The rows of a loss CSV (those before `before_step` when given), in step order."""
        rows = sorted(read_loss_rows(path), key=lambda row: int(row["step"]))
        rows = [row for row in rows if before_step is None or int(row["step"]) < before_step]
        validated = [row for row in rows if (row.get("val_loss") or "").strip()]
        return cls([int(row["step"]) for row in rows], [float(row["loss"]) for row in rows],
                   [float(row["learn_rate"]) for row in rows], [int(row["step"]) for row in validated],
                   [float(row["val_loss"]) for row in validated])


def step_moving_average(steps: Sequence[int], values: Sequence[float], window: int) -> np.ndarray:
    """At each point, the mean of the values whose step lies in the `window` steps ending there
    (fewer at the start); `steps` ascending."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return data
    at = np.asarray(steps, dtype=np.int64)
    sums = np.cumsum(np.insert(data, 0, 0.0))
    ends = np.arange(1, data.size + 1)
    starts = np.searchsorted(at, at - window, side="right")
    return (sums[ends] - sums[starts]) / (ends - starts)


def smoothing_window(steps: Sequence[int]) -> int:
    """The moving average's window in steps: a tenth of the drawn span, at least SMOOTHING_MIN_STEPS."""
    span = (steps[-1] - steps[0] + 1) if len(steps) else 0
    return max(SMOOTHING_MIN_STEPS, int(span * SMOOTHING_SHARE))


def loss_plot_figure(history: LossHistory, title: str = "loss", size: tuple[int, int] = (800, 480)) -> Figure:
    """A matplotlib Figure of the run's curves (drawn on the Agg canvas, no display needed)."""
    from matplotlib.ticker import MaxNLocator

    figure = agg_figure(*size)
    axes = figure.add_subplot()
    steps, losses = history.steps, history.losses
    handles: list[Line2D] = []
    if losses:
        handles += axes.plot(steps, losses, color="#9dbbe0", linewidth=0.8, label=LEGEND["raw"])
        handles += axes.plot(steps, step_moving_average(steps, losses, smoothing_window(steps)), color="#1f5fbf",
                             linewidth=1.8, label=LEGEND["smooth"])
    if history.validation_losses:
        handles += axes.plot(history.validation_steps, history.validation_losses, color="#d9480f", marker="o",
                             markersize=3, linewidth=1.5, label=LEGEND["validation"])
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    axes.grid(True, alpha=0.3)
    if history.learning_rates:
        handles += _draw_rates(axes, steps, history.learning_rates)
    last = f"last {losses[-1]:.5f}" if losses else "no steps yet"
    axes.set_title(f"{title} ({last})")
    if handles:
        axes.legend(handles=handles, loc="upper right", fontsize=8)
    figure.tight_layout()
    return figure


def _draw_rates(axes: Axes, steps: Sequence[int], rates: Sequence[float]) -> list[Line2D]:
    """The learning rate on a second axis from 0, so that a constant rate is a flat line mid-height."""
    rate_axes = axes.twinx()
    lines = rate_axes.plot(steps[:len(rates)], rates, color="#2b8a3e", linestyle="--", linewidth=1.0,
                           label=LEGEND["lr"])
    rate_axes.set_ylabel("learning rate")
    top = max(rates)
    if top > 0 and min(rates) >= 0:
        rate_axes.set_ylim(0.0, top * RATE_HEADROOM)
    rate_axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return list(lines)


def loss_curve_image(history: LossHistory, title: str = "loss", width: int = 800, height: int = 480,
                     figure: Optional[Figure] = None) -> torch.Tensor:
    """The curves as a float IMAGE [1,H,W,3] (ComfyUI's picture type)."""
    return figure_image(figure or loss_plot_figure(history, title, (width, height)))
