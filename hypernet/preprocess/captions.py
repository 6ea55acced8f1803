"""Combining an existing caption with a generated one (A1111's "Existing Caption txt Action")."""
from __future__ import annotations

from .options import CAPTION_ACTIONS


def combine_caption(existing: str, generated: str, action: str = "ignore", separator: str = ", ") -> str:
    """ignore -> generated; copy -> existing (generated when there is none);
    prepend -> existing + separator + generated; append -> generated + separator + existing.

    A1111 joins with a single space; for tag lists ", " keeps the result a valid tag list."""
    if action not in CAPTION_ACTIONS:
        raise ValueError(f"caption action {action!r}: choose one of {', '.join(CAPTION_ACTIONS)}")
    existing, generated = (existing or "").strip(), (generated or "").strip()
    if action == "ignore" or not existing:
        return generated
    if action == "copy" or not generated:
        return existing
    if action == "prepend":
        return f"{existing}{separator}{generated}".strip()
    return f"{generated}{separator}{existing}".strip()
