"""Hypernet Studio: ComfyUI entry point (the repository root is the custom-node folder).

Importing this is cheap: node modules defer diffusers/transformers until a node runs.
Outside ComfyUI the same package is importable as `hypernet_studio`, and the headless
runtime (`hypernet_studio.runtime`) adds stand-ins for the ComfyUI core nodes."""
from pathlib import Path

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.comfy_adapter import register_model_folders

WEB_DIRECTORY = "./web"

register_model_folders(Path(__file__).parent)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
