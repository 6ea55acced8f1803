"""What is done to a value given for an input before it is used, wherever it came from: the check
that a choice is one of the allowed ones, the unwrap of a one-item list, and the reading of a
list of seeds."""
from __future__ import annotations

import re
from typing import Any, Iterable

from .errors import InputError

MAX_SEED = 2**64 - 1  # ComfyUI's seed widgets go this far


def seed_list(text: str, input_name: str) -> list[int]:
    """The seeds of "1, 2, 3" (commas or spaces) in the order given; [] for an empty text."""
    parts = [part for part in re.split(r"[,\s]+", (text or "").strip()) if part]
    if not all(part.isdigit() and int(part) <= MAX_SEED for part in parts):
        raise InputError(input_name, f"{text.strip()!r}: give whole numbers from 0 to 2**64 - 1, "
                                     "separated by commas or spaces")
    return [int(part) for part in parts]


def check_choice(input_name: str, value: Any, choices: Iterable[Any]) -> None:
    """InputError naming `input_name` unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise InputError(input_name, f"{value!r} is not one of {', '.join(map(str, choices))}")


def single_value(value: Any) -> Any:
    """The item of a one-item list, anything else unchanged. A ComfyUI node with INPUT_IS_LIST
    gets every widget's value as a one-item list (and a linked list input as the whole list)."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value
