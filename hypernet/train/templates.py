"""Prompt template sets: A1111's six sets, written as our own text files, or custom text.

Each line is one prompt template; `[name]` becomes the hypernetwork name and `[filewords]`
the image's caption (after tag shuffle/dropout, see prompts.py)."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_SETS = ("style_filewords", "style", "subject", "subject_filewords", "hypernetwork", "none")
CUSTOM = "custom"


def template_lines(choice: str, custom_text: str = "") -> list[str]:
    """The non-empty template lines of set `choice`, or of `custom_text` when choice is "custom"."""
    if choice == CUSTOM:
        text, source = custom_text, "the custom template"
    elif choice in TEMPLATE_SETS:
        path = TEMPLATE_DIR / f"{choice}.txt"
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        raise InputError("prompt_template", f"unknown prompt template {choice!r}; choose one of "
                         f"{', '.join(TEMPLATE_SETS + (CUSTOM,))}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError("custom_template" if choice == CUSTOM else "prompt_template",
                         f"{source} has no template lines (write one prompt per line, "
                         f"using [name] and [filewords])")
    return lines
