"""The one shape a dataset has between steps: parallel lists, one entry per picture."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class DatasetLists:
    """Image, mask (None = opaque), caption and stem per picture, in step.

    Pictures are IMAGE tensors between nodes and Pillow images inside the crop code. `boxes` and
    `debug_images` are filled only by Auto Crop; `warnings` are shown on the node; `folder` and
    `chunk` say where a loaded set came from."""

    images: list[Any] = field(default_factory=list)
    masks: list[Any] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    stems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    boxes: list[dict] = field(default_factory=list)
    debug_images: list[Any] = field(default_factory=list)
    folder: Optional[Path] = None
    chunk: Any = None  # the Chunk (chunks.py) a chunked load took; None = the whole selection

    def add(self, image: Any, mask: Any, caption: str, stem: str) -> None:
        """Append one picture to every list."""
        self.images.append(image)
        self.masks.append(mask)
        self.captions.append(caption)
        self.stems.append(stem)
