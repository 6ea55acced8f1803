"""How every node in the pack is declared: input specs, the node base class, the mappings.

An input spec is ComfyUI's V1 `(TYPE, options)` tuple with a tooltip. The helpers that build
one take keywords only, named as ComfyUI's V3 inputs name them
(`decimal(default=1.0, min=0.0, max=2.0, step=0.05, tooltip=...)`), so a declaration reads the
same whichever one wrote it; what INPUT_TYPES returns is V1's. `Node` gives each class its
DESCRIPTION (from the docstring) and turns the library's `InputError` into an error that names
the node and the input, so that library code never needs to know which node called it."""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from ..hypernet.errors import InputError
from ..hypernet.input_values import single_value
from .host import HOST

Spec = tuple


def _with(options: dict, **extra: Any) -> dict:
    return {**options, **{key: value for key, value in extra.items() if value is not None}}


def integer(*, default: int, min: int, max: int, step: Optional[int] = None, tooltip: str,
            control_after_generate: Optional[bool] = None) -> Spec:
    """A whole number; `control_after_generate` gives it the editor's fixed/increment/... control."""
    return ("INT", _with({"default": default, "min": min, "max": max}, step=step, tooltip=tooltip,
                         control_after_generate=control_after_generate))


def decimal(*, default: float, min: float, max: float, step: Optional[float] = None, tooltip: str) -> Spec:
    return ("FLOAT", _with({"default": default, "min": min, "max": max}, step=step, tooltip=tooltip))


def boolean(*, default: bool, tooltip: str) -> Spec:
    return ("BOOLEAN", {"default": default, "tooltip": tooltip})


def text(*, default: str, multiline: bool = False, tooltip: str) -> Spec:
    return ("STRING", _with({"default": default, "tooltip": tooltip}, multiline=multiline or None))


def combo(options: Iterable[str], *, default: Optional[str] = None, tooltip: str) -> Spec:
    """A choice; without a default, the first option."""
    options = list(options)
    return (options, {"default": default if default is not None else options[0], "tooltip": tooltip})


def files(names: Iterable[str], *, tooltip: str) -> Spec:
    """A combo of file names with no default: the frontend shows the first one."""
    return (list(names), {"tooltip": tooltip})


def socket(type_name: str, *, tooltip: str, **extra: Any) -> Spec:
    """A linked-only input (MODEL, IMAGE, or a STRING list with forceInput)."""
    return (type_name, {**extra, "tooltip": tooltip})


def single_values(values: dict[str, Any]) -> dict[str, Any]:
    """Every value of an INPUT_IS_LIST node's widgets unwrapped (see single_value)."""
    return {name: single_value(value) for name, value in values.items()}


def validation(*checks: Callable[[], Any]) -> Union[bool, str]:
    """VALIDATE_INPUTS' answer: True, or the first check's InputError as "input 'x': why"."""
    for check in checks:
        try:
            check()
        except InputError as exc:
            return str(exc)
    return True


class Node:
    """Base of every node: NODE_ID and DISPLAY_NAME declared once, DESCRIPTION from the docstring,
    and InputError raised inside the node function reported as "node N (ID), input 'x': ..."."""

    NODE_ID: str = ""
    DISPLAY_NAME: str = ""
    FUNCTION: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.DESCRIPTION = " ".join((cls.__doc__ or "").split())
        function = cls.__dict__.get(cls.FUNCTION)
        if function is not None:
            setattr(cls, cls.FUNCTION, _naming_input_errors(cls, function))


def _naming_input_errors(cls: type, function: Callable) -> Callable:
    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except InputError as exc:
            node_id = HOST.current_node_id()
            where = f"node {node_id} ({cls.NODE_ID})" if node_id is not None else cls.NODE_ID
            raise ValueError(f"{where}, {exc}") from exc
    return call


def mappings(classes: Sequence[type]) -> tuple[dict[str, type], dict[str, str]]:
    """NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS for `classes`."""
    return ({cls.NODE_ID: cls for cls in classes}, {cls.NODE_ID: cls.DISPLAY_NAME for cls in classes})
