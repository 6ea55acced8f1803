"""Turning Deepbooru probabilities into a caption string (A1111's interrogate options)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class TagOptions:
    """A1111's current defaults: threshold 0.5, alphabetical, spaces, escaped, no ranks."""

    threshold: float = 0.5
    sort_alpha: bool = True
    use_spaces: bool = True
    escape: bool = True
    filter_tags: str = ""
    include_ranks: bool = False
    drop_ratings: bool = True


def parse_tag_filter(filter_tags: str) -> set[str]:
    """Comma-separated tags to leave out, normalised to underscores so either spelling matches."""
    return {t.strip().replace(" ", "_") for t in filter_tags.split(",") if t.strip()}


def escape_tag(tag: str) -> str:
    """Backslash before backslash and round brackets (prompt-weight syntax); [] left alone."""
    return tag.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def select_tags(probabilities: Sequence[float], tags: Sequence[str], options: TagOptions
                ) -> list[tuple[str, float]]:
    """(raw tag, probability) pairs kept by threshold, rating and filter rules, in output order."""
    if len(probabilities) != len(tags):
        raise ValueError(f"{len(probabilities)} probabilities for {len(tags)} tags")
    excluded = parse_tag_filter(options.filter_tags)
    kept = [(tag, float(p)) for tag, p in zip(tags, probabilities)
            if float(p) >= options.threshold
            and not (options.drop_ratings and tag.startswith("rating:"))
            and tag not in excluded]
    if options.sort_alpha:
        kept.sort(key=lambda pair: pair[0])
    else:
        kept.sort(key=lambda pair: -pair[1])
    return kept


def format_tags(probabilities: Sequence[float], tags: Sequence[str], options: TagOptions) -> str:
    """The caption: selected tags, spaced/escaped/ranked as configured, joined with ", "."""
    parts = []
    for tag, probability in select_tags(probabilities, tags, options):
        text = tag.replace("_", " ") if options.use_spaces else tag
        if options.escape:
            text = escape_tag(text)
        if options.include_ranks:
            text = f"({text}:{probability:.3f})"
        parts.append(text)
    return ", ".join(parts)
