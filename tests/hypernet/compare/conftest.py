"""A training run's folder as Train Hypernet leaves it, built from small stand-in files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def write_network_file(path: Path, step: int) -> Path:
    """A .pt holding what the compare modules read of a hypernetwork file: its step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "name": path.stem}, path)
    return path


def write_loss_csv(folder: Path, rows: list[tuple[int, float, object]]) -> Path:
    """hypernetwork_loss.csv with a val_loss column: (step, loss, val_loss or None) per row."""
    lines = ["step,epoch,epoch_step,loss,learn_rate,val_loss"]
    lines += [f"{step},0,{step - 1},{loss:.7f},0.0001,{'' if val is None else f'{val:.7f}'}"
              for step, loss, val in rows]
    path = folder / "hypernetwork_loss.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def make_run(tmp_path):
    """make_run(name, steps, best=None, summary=None): a run folder under tmp_path/training with
    NAME-STEP.pt (+ .optim) per step and NAME-best.pt holding step `best`."""
    def make(name: str, steps: list[int], best=None, summary=None) -> Path:
        folder = tmp_path / "training" / name
        for step in steps:
            write_network_file(folder / f"{name}-{step}.pt", step)
            (folder / f"{name}-{step}.pt.optim").write_bytes(b"optimizer state")
        if best is not None:
            write_network_file(folder / f"{name}-best.pt", best)
        if summary is not None:
            (folder / "run_summary.json").write_text(json.dumps(summary), encoding="utf-8")
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return make


@pytest.fixture
def network_file():
    """network_file(path, step): write a stand-in hypernetwork file."""
    return write_network_file


@pytest.fixture
def loss_csv():
    """loss_csv(folder, rows): write the run's loss CSV."""
    return write_loss_csv
