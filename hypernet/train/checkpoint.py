"""Training checkpoints: the A1111 `.pt` plus a `.pt.optim` that makes resume exact.

The `.optim` file has A1111's keys (optimizer_name, hash = shorthash of the .pt,
optimizer_state_dict), so A1111 can resume from it too, plus ours: the run's seed (every
random draw is derived from seed and step, see rng.py), the GradScaler state, and the step.
Both files are written atomically, the .pt first; a crash in between leaves an .optim whose
hash no longer matches, which is then ignored rather than misapplied."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..files import atomic_path
from ..file_format import load_optimizer_state, optimizer_state_path, save_hypernetwork, shorthash

RESUME_FORMAT = "hypernet-studio.train.v1"


def save_checkpoint(hypernetwork, path: Path, optimizer: torch.optim.Optimizer,
                    extra: Optional[dict] = None) -> Path:
    """Write `hypernetwork` to `path` and its optimizer/RNG state to `path.optim`.

    Refuses (ValueError, nothing written) if any weight is NaN or inf."""
    path = Path(path)
    save_hypernetwork(hypernetwork, path, format="pt")
    payload = {"optimizer_name": type(optimizer).__name__, "hash": shorthash(path),
               "optimizer_state_dict": optimizer.state_dict(),
               "hypernet_studio": RESUME_FORMAT, "step": int(hypernetwork.step), **(extra or {})}
    with atomic_path(optimizer_state_path(path)) as tmp:
        torch.save(payload, tmp)
    return path


def load_resume_state(hypernetwork) -> Optional[dict]:
    """The `.optim` payload saved beside the file `hypernetwork` came from, if it matches it."""
    filename = getattr(hypernetwork, "filename", None)
    if not filename or not Path(filename).is_file() or Path(filename).suffix.lower() != ".pt":
        return None
    payload = load_optimizer_state(filename)
    if payload is None:
        return None
    if payload.get("step") is not None and int(payload["step"]) != int(hypernetwork.step):
        return None
    return payload


def restore_optimizer(optimizer: torch.optim.Optimizer, payload: Optional[dict]) -> bool:
    """Load the optimizer state if it was saved by the same optimizer type; True if loaded."""
    if not payload or payload.get("optimizer_name") != type(optimizer).__name__:
        return False
    optimizer.load_state_dict(payload["optimizer_state_dict"])
    return True

