"""Flipped copies of a dataset (A1111 "Create flipped copies"), with captions that follow.

Works on IMAGE/MASK tensors directly (no round trip through Pillow), so it is exact and
cheap. A horizontal flip (or both = 180 degrees) can also swap the words "left" and "right"
in the caption, since the picture's sides swapped too."""
from __future__ import annotations

import re
from typing import Optional

import torch

from .lists import DatasetLists
from .options import FLIP_DIRECTIONS, FLIP_MODES

# Spatial dims of an IMAGE item [1,H,W,C] (H=1, W=2) and a MASK item [1,H,W] (same).
_DIMS = {"horizontal": (2,), "vertical": (1,), "both": (1, 2)}
_SUFFIX = {"horizontal": "flip", "vertical": "vflip", "both": "rot180"}
_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def swap_left_right(caption: str) -> str:
    """Swap whole words "left" and "right", keeping their capitalisation."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        if word[0].isupper():
            return other.capitalize()
        return other
    return _LEFT_RIGHT.sub(swap, caption)


def flip_tensor(tensor: torch.Tensor, direction: str) -> torch.Tensor:
    """A flipped copy of an IMAGE [1,H,W,C] or MASK [1,H,W] item (the input is not modified)."""
    if direction not in _DIMS:
        raise ValueError(f"flip direction {direction!r}: choose one of {', '.join(FLIP_DIRECTIONS)}")
    return torch.flip(tensor, dims=_DIMS[direction])


def flip_dataset(images: list[torch.Tensor], masks: list[Optional[torch.Tensor]], captions: list[str],
                 stems: list[str], direction: str = "horizontal", mode: str = "append",
                 swap_words: bool = False) -> DatasetLists:
    """`append` puts each flipped copy right after its original (A1111); `replace` flips in place."""
    if mode not in FLIP_MODES:
        raise ValueError(f"flip mode {mode!r}: choose one of {', '.join(FLIP_MODES)}")
    output = DatasetLists()
    swaps_sides = direction in ("horizontal", "both")
    for image, mask, caption, stem in zip(images, masks, captions, stems):
        if mode == "append":
            output.add(image, mask, caption, stem)
        output.add(flip_tensor(image, direction), None if mask is None else flip_tensor(mask, direction),
                   swap_left_right(caption) if swap_words and swaps_sides else caption,
                   f"{stem}-{_SUFFIX[direction]}" if mode == "append" else stem)
    return output
