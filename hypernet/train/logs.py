"""What a run logs as it goes: the loss CSV (A1111's columns, plus val_loss when validating) and,
when asked, TensorBoard scalars (loss, val_loss, learning rate) and preview grids."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import InputError
from ..files import safe_join
from .config import TrainConfig
from .csvlog import COLUMNS, LossCSV

VALIDATION_COLUMN = "val_loss"


def check_log_target(log_to: str) -> None:
    """TensorBoard needs its package (the pack's `tensorboard` extra)."""
    if log_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise InputError("log_to", "TensorBoard logging needs the tensorboard package: "
                                   "pip install 'hypernet-studio[tensorboard]' (or pip install tensorboard)")


class RunLogs:
    """The CSV and TensorBoard writers of one run (nothing without a log folder)."""

    def __init__(self, config: TrainConfig, log_dir: Optional[Path], steps_per_epoch: int, start_step: int,
                 validating: bool):
        self.csv: Optional[LossCSV] = None
        self.tensorboard: Any = None
        if log_dir is None:
            return
        columns = COLUMNS + ((VALIDATION_COLUMN,) if validating else ())
        self.csv = LossCSV(safe_join(log_dir, "hypernetwork_loss.csv"), config.csv_every, steps_per_epoch,
                           start_step, columns)
        if config.log_to == "tensorboard":
            check_log_target(config.log_to)
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(safe_join(log_dir, "tensorboard")), purge_step=start_step + 1)

    @property
    def csv_path(self) -> Optional[Path]:
        return self.csv.path if self.csv is not None and self.csv.every > 0 else None

    def step(self, step: int, loss: float, learn_rate: float, val_loss: Optional[float] = None) -> None:
        """One optimizer step's numbers (the CSV writes the rows that are due, and every validation)."""
        if self.csv is not None:
            self.csv.record(step, loss, learn_rate, val_loss)
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("loss/train", loss, step)
            self.tensorboard.add_scalar("learning_rate", learn_rate, step)
            if val_loss is not None:
                self.tensorboard.add_scalar("loss/validation", val_loss, step)

    def preview(self, step: int, grid: torch.Tensor) -> None:
        if self.tensorboard is not None:
            self.tensorboard.add_image("preview", grid[0].clamp(0, 1), step, dataformats="HWC")

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
