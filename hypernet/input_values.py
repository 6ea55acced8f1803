"""The two things done to a value given for an input before it is used, wherever it came from:
the check that a choice is one of the allowed ones, and the unwrap of a one-item list."""
from __future__ import annotations

from typing import Any, Iterable

from .errors import InputError


def check_choice(input_name: str, value: Any, choices: Iterable[Any]) -> None:
    """InputError naming `input_name` unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise InputError(input_name, f"{value!r} is not one of {', '.join(map(str, choices))}")


def single_value(value: Any) -> Any:
    """The item of a one-item list, anything else unchanged. A ComfyUI node with INPUT_IS_LIST
    gets every widget's value as a one-item list (and a linked list input as the whole list)."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value
