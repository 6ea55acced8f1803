"""The node registry the headless runtime executes against."""
from __future__ import annotations

from .. import install_host
from ..nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from ..nodes.host import comfy_importable


def build_registry(include_standins: bool | None = None) -> tuple[dict, dict]:
    """Our nodes, plus stand-ins for the ComfyUI core nodes when ComfyUI is absent.

    Returns (class_mappings, display_names). Our own IDs are prefixed, so they never clash
    with the stand-ins, which use ComfyUI's exact IDs."""
    install_host()  # the classes' INPUT_TYPES and functions ask the host for folders and models
    classes = dict(NODE_CLASS_MAPPINGS)
    names = dict(NODE_DISPLAY_NAME_MAPPINGS)
    if include_standins is None:
        include_standins = not comfy_importable()
    if include_standins:
        from . import standins

        classes.update(standins.NODE_CLASS_MAPPINGS)
        names.update(standins.NODE_DISPLAY_NAME_MAPPINGS)
    return classes, names
