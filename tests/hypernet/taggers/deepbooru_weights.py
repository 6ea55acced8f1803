"""Random-weight Deepbooru files for the tests, and a way to drop the loader's cached model."""
from __future__ import annotations

import math
from typing import Optional

import torch

from hypernet_studio.hypernet.taggers import deepbooru


def random_state_dict(num_tags: int = deepbooru.DEEPBOORU_NUM_TAGS, seed: int = 0, scale: float = 0.02,
                      tags: Optional[list[str]] = None) -> dict:
    """A random-weight file content in A1111's layout.

    Every tensor is a view into one shared random buffer, so `torch.save` writes it once:
    the file is a few tens of MB instead of 644 MB, yet loads as the full architecture."""
    with torch.device("meta"):
        shapes = {name: tuple(p.shape) for name, p in deepbooru.DeepDanbooruNet(num_tags).named_parameters()}
    generator = torch.Generator().manual_seed(seed)
    largest = max(math.prod(shape) for shape in shapes.values())
    buffer = torch.randn(largest, generator=generator) * scale
    state: dict = {name: buffer[:math.prod(shape)].view(shape) for name, shape in shapes.items()}
    state["tags"] = list(tags) if tags is not None else [f"tag_{i}" for i in range(num_tags)]
    return state


def forget_cached_model() -> None:
    """Drop the model load_deepbooru keeps between runs (frees its memory; the next load reads the file)."""
    with deepbooru._cache_lock:
        deepbooru._cached.clear()
