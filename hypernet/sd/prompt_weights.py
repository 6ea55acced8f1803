"""ComfyUI's prompt emphasis syntax, reimplemented from its documented behaviour.

- `(text)` multiplies the weight of `text` by 1.1; groups nest, so `((text))` is 1.21.
- `(text:1.3)` sets the weight of `text` to 1.3 (an explicit number replaces, it does not multiply).
- `\\(` and `\\)` are literal parentheses. Unbalanced parentheses are kept as plain text.
- Square brackets have no meaning (unlike A1111).

The encoder then moves each weighted token's embedding away from (or towards) the embedding
of the empty prompt at that position: z = z_empty + (z - z_empty) * weight.
"""
from __future__ import annotations

_OPEN, _CLOSE = "\0open\0", "\0close\0"


def _split_top_level(text: str) -> list[str]:
    """Plain runs and balanced top-level "( ... )" groups, in order."""
    pieces, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            if depth == 0 and index > start:
                pieces.append(text[start:index])
                start = index
            if depth == 0:
                start = index
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                pieces.append(text[start:index + 1])
                start = index + 1
    if start < len(text):
        pieces.append(text[start:])
    return [piece for piece in pieces if piece]


def _weights(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for piece in _split_top_level(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner, inner_weight = piece[1:-1], weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out.extend(_weights(inner, inner_weight))
        else:
            out.append((piece, weight))
    return out


def parse_weighted_prompt(text: str) -> list[tuple[str, float]]:
    """[(segment, weight), ...] covering the whole prompt, escapes resolved."""
    escaped = text.replace("\\(", _OPEN).replace("\\)", _CLOSE)
    segments = _weights(escaped, 1.0)
    merged: list[tuple[str, float]] = []
    for segment, weight in segments:
        segment = segment.replace(_OPEN, "(").replace(_CLOSE, ")")
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + segment, weight)
        else:
            merged.append((segment, weight))
    return merged
