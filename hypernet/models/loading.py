"""Offline checkpoint loading (filled in below the built-in case)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .components import SDComponents
from .tiny import TINY_MODEL_NAME, build_tiny_components


def load_components(path_or_name: Union[str, Path], device=None, dtype=None,
                    model_type: Optional[str] = None) -> SDComponents:
    """Load a checkpoint by path, or the built-in tiny model by its name."""
    if str(path_or_name) == TINY_MODEL_NAME:
        return build_tiny_components(device=device, dtype=dtype)
    raise NotImplementedError(f"loading {path_or_name!r}: file checkpoints are not supported yet")
