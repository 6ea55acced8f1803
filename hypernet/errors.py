"""The library's error for a value the user gave: it carries the input's name.

The library never knows which node (if any) the value came from. The node layer catches
`InputError` and adds "node N (Class)"; the headless CLI and ComfyUI then show
"node 4 (HN_TrainHypernet), input 'learning_rate': ...". Nothing compares message text."""
from __future__ import annotations


class InputError(ValueError):
    """`input_name` is unusable; `message` says why and what to do instead."""

    def __init__(self, input_name: str, message: str):
        super().__init__(f"input '{input_name}': {message}")
        self.input_name = input_name
        self.message = message
