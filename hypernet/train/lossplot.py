"""The loss curve as a picture (matplotlib, Agg): the loss per step and its moving average, the
validation loss when there is one, and the learning rate on a second axis, with axis titles
and a legend, so that overfitting (training loss falling while validation loss rises) shows."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, cast

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

LEGEND = {"raw": "training loss (each step)", "smooth": "training loss (moving average)",
          "validation": "validation loss", "lr": "learning rate"}


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over `window` values (shorter at the start)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return data
    sums = np.cumsum(np.insert(data, 0, 0.0))
    ends = np.arange(1, data.size + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def loss_plot_figure(losses: Sequence[float], first_step: int = 1, learning_rates: Sequence[float] = (),
                     validation_steps: Sequence[int] = (), validation_losses: Sequence[float] = (),
                     title: str = "loss", size: tuple[int, int] = (800, 480)) -> Figure:
    """A matplotlib Figure of the run's curves (drawn on the Agg canvas, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps = np.arange(first_step, first_step + len(losses))
    handles = []
    if len(losses):
        handles += axes.plot(steps, losses, color="#9dbbe0", linewidth=0.8, label=LEGEND["raw"])
        handles += axes.plot(steps, moving_average(losses, max(1, len(losses) // 20)), color="#1f5fbf",
                             linewidth=1.8, label=LEGEND["smooth"])
    if len(validation_losses):
        handles += axes.plot(validation_steps, validation_losses, color="#d9480f", marker="o", markersize=3,
                             linewidth=1.5, label=LEGEND["validation"])
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    if len(learning_rates):
        rate_axes = axes.twinx()
        handles += rate_axes.plot(steps[:len(learning_rates)], learning_rates, color="#2b8a3e", linestyle="--",
                                  linewidth=1.0, label=LEGEND["lr"])
        rate_axes.set_ylabel("learning rate")
        rate_axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    last = f"last {losses[-1]:.5f}" if len(losses) else "no steps yet"
    axes.set_title(f"{title} ({last})")
    if handles:
        axes.legend(handles=handles, loc="upper right", fontsize=8)
    figure.tight_layout()
    return figure


def loss_curve_image(losses: Sequence[float], first_step: int = 1, learning_rates: Sequence[float] = (),
                     validation_steps: Sequence[int] = (), validation_losses: Sequence[float] = (),
                     title: str = "loss", width: int = 800, height: int = 480,
                     figure: Optional[Figure] = None) -> torch.Tensor:
    """The curves as a float IMAGE [1,H,W,3] (ComfyUI's picture type)."""
    figure = figure or loss_plot_figure(losses, first_step, learning_rates, validation_steps, validation_losses,
                                        title, (width, height))
    canvas = cast("FigureCanvasAgg", figure.canvas)  # loss_plot_figure's figures are on the Agg canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].astype(np.float32) / 255.0).unsqueeze(0)
