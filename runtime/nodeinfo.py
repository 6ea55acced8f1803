"""What a V1 node class declares, read once in the shape the runtime needs.

ComfyUI's INPUT_TYPES dict order is the socket/widget order; widget-capable inputs are the
primitive types and combos (a list of options, or "COMBO" with an `options` list)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PRIMITIVE_WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Inputs the frontend gives a "control after generate" widget even without the option.
SEED_INPUT_NAMES = {"seed", "noise_seed"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


@dataclass(frozen=True)
class InputInfo:
    """One declared input of a node class."""

    name: str
    type: Any  # a type string, or a list of combo options
    options: dict = field(default_factory=dict)
    section: str = "required"  # required | optional | hidden

    @property
    def required(self) -> bool:
        return self.section == "required"

    @property
    def is_combo(self) -> bool:
        return isinstance(self.type, (list, tuple)) or self.type == "COMBO"

    @property
    def combo_options(self) -> list | None:
        if isinstance(self.type, (list, tuple)):
            return list(self.type)
        if self.type == "COMBO":
            return list(self.options.get("options", []))
        return None

    @property
    def type_name(self) -> str:
        """The type as ComfyUI names it in messages and link checks."""
        return "COMBO" if self.is_combo else str(self.type)

    @property
    def is_widget(self) -> bool:
        """True when the frontend draws a widget for it (and so stores it in widgets_values)."""
        if self.section == "hidden" or self.options.get("forceInput"):
            return False
        return self.is_combo or self.type in PRIMITIVE_WIDGET_TYPES

    @property
    def has_control_after_generate(self) -> bool:
        """The frontend saves a hidden fixed/increment/... value right after this widget."""
        if not self.is_widget:
            return False
        if "control_after_generate" in self.options:  # an explicit False turns it off
            return bool(self.options["control_after_generate"])
        return self.type == "INT" and self.name in SEED_INPUT_NAMES

    @property
    def has_upload_button(self) -> bool:
        """`image_upload` combos are followed by the upload button's saved value."""
        return self.is_widget and bool(self.options.get("image_upload") or self.options.get("video_upload")
                                       or self.options.get("audio_upload"))


def node_inputs(cls: type) -> dict[str, InputInfo]:
    """All inputs of `cls`, required then optional then hidden, in declaration order."""
    declared = cls.INPUT_TYPES() or {}
    inputs: dict[str, InputInfo] = {}
    for section in ("required", "optional", "hidden"):
        for name, entry in (declared.get(section) or {}).items():
            if section == "hidden":
                type_, options = entry, {}
            elif isinstance(entry, (tuple, list)) and entry and not isinstance(entry, str):
                type_ = entry[0]
                options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            else:
                type_, options = entry, {}
            inputs[name] = InputInfo(name, type_, dict(options), section)
    return inputs


def return_types(cls: type) -> tuple:
    return tuple(getattr(cls, "RETURN_TYPES", ()) or ())


def output_is_list(cls: type) -> tuple[bool, ...]:
    """OUTPUT_IS_LIST padded to the number of outputs."""
    count = len(return_types(cls))
    flags = tuple(getattr(cls, "OUTPUT_IS_LIST", ()) or ())
    return tuple(bool(flags[i]) if i < len(flags) else False for i in range(count))


def is_output_node(cls: type) -> bool:
    return bool(getattr(cls, "OUTPUT_NODE", False))


def type_to_str(type_: Any) -> str:
    return "COMBO" if isinstance(type_, (list, tuple)) else str(type_)


def types_match(output_type: Any, input_type: Any) -> bool:
    """ComfyUI's link rule: equal names, `*` on either side, or overlapping comma unions."""
    received, wanted = type_to_str(output_type), type_to_str(input_type)
    if received == wanted or "*" in (received, wanted):
        return True
    received_set = {part.strip() for part in received.split(",")}
    wanted_set = {part.strip() for part in wanted.split(",")}
    return bool(received_set & wanted_set) and ("," in received or "," in wanted)
