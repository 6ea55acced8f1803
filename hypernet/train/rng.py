"""Seeds derived from (run seed, purpose, step, ...): every random draw of a training step is
a pure function of these, so a resumed run replays exactly the draws an unbroken run makes."""
from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from `seed` and any labels/indices (stable across processes and platforms)."""
    text = ":".join([str(int(seed))] + [str(p) for p in parts])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU torch.Generator seeded from `derive_seed(seed, *parts)`."""
    return torch.Generator("cpu").manual_seed(derive_seed(seed, *parts))
