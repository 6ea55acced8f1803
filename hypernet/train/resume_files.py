"""Training checkpoints: the A1111 `.pt` plus the `.pt.optim` beside it, the one place that
reads and writes optimizer-state files (docs/file-format.md describes both).

The `.optim` file has A1111's keys (optimizer_name, hash = shorthash of the .pt,
optimizer_state_dict), so A1111 can resume from it too, plus ours: the run's seed (every
random draw is derived from seed and step, see random_draws.py), the GradScaler state, and the step.
Both files are written atomically, the .pt first; a crash in between leaves an .optim whose
hash no longer matches, which is then ignored rather than misapplied. As in A1111, a state
whose hash does not match its `.pt` is ignored and the optimizer starts from scratch."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch

from ..file_format import HypernetFileError, read_torch_file, save_hypernetwork, shorthash, write_torch_file
from ..files import PathLike, atomic_path
from ..network import Hypernetwork

logger = logging.getLogger(__name__)

RESUME_FORMAT = "hypernet-studio.train.v1"


def optimizer_state_path(path: PathLike) -> Path:
    """A1111's companion file: `NAME.pt.optim`."""
    return Path(f"{path}.optim")


def read_optimizer_state(path: PathLike) -> Optional[dict]:
    """The `.optim` dict for hypernetwork file `path`, or None when absent or stale."""
    target = optimizer_state_path(path)
    if not target.is_file():
        return None
    payload = read_torch_file(target, "optimizer state")
    if not isinstance(payload, dict) or "optimizer_state_dict" not in payload:
        raise HypernetFileError(f"{target}: not an A1111 optimizer state file")
    if payload.get("hash") != shorthash(path):
        logger.warning("%s: optimizer state belongs to another version of %s; ignoring it", target, Path(path).name)
        return None
    return payload


def write_optimizer_state(hypernetwork_path: PathLike, optimizer: torch.optim.Optimizer,
                          extra: Optional[dict] = None) -> Path:
    """Write the `.optim` for the (already written) `hypernetwork_path`: A1111's keys, then `extra`."""
    target = optimizer_state_path(hypernetwork_path)
    payload: dict[str, Any] = {"optimizer_name": type(optimizer).__name__, "hash": shorthash(hypernetwork_path),
                               "optimizer_state_dict": optimizer.state_dict(), **(extra or {})}
    with atomic_path(target) as tmp:
        write_torch_file(payload, tmp)
    return target


def save_checkpoint(hypernetwork: Hypernetwork, path: Path, optimizer: torch.optim.Optimizer,
                    extra: Optional[dict] = None) -> Path:
    """Write `hypernetwork` to `path` and its optimizer/RNG state to `path.optim`.

    Refuses (ValueError, nothing written) if any weight is NaN or inf."""
    path = Path(path)
    save_hypernetwork(hypernetwork, path, format="pt")
    write_optimizer_state(path, optimizer, {"hypernet_studio": RESUME_FORMAT, "step": int(hypernetwork.step),
                                            **(extra or {})})
    return path


def stored_step(path: PathLike) -> Optional[int]:
    """The step a hypernetwork file records, read cheaply and safely for validation: a
    .safetensors file's header only, a .pt memory-mapped with weights_only; None when the file
    cannot be read that way (loading it reports why)."""
    import json

    from safetensors import safe_open

    path = Path(path)
    try:
        if path.suffix.lower() != ".pt":
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                state = json.loads((handle.metadata() or {}).get("hypernetwork", "{}"))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any unreadable file: Load Hypernet's own check names it
        return None
    step = state.get("step") if isinstance(state, dict) else None
    return int(step) if isinstance(step, (int, float)) else None


def load_resume_state(hypernetwork: Hypernetwork) -> Optional[dict]:
    """The `.optim` payload saved beside the file `hypernetwork` came from, if it matches it."""
    filename = getattr(hypernetwork, "filename", None)
    if not filename or not Path(filename).is_file() or Path(filename).suffix.lower() != ".pt":
        return None
    payload = read_optimizer_state(filename)
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
