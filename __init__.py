"""Hypernet Studio: the ComfyUI entry point (the repository root is the custom-node folder).

Outside ComfyUI the same package is importable as `hypernet_studio`. Importing it chooses the
host once: ComfyUI's when ComfyUI is present, else the headless runtime's (runtime/headless_host.py),
which the CLI and the tests configure. Importing is cheap: node modules defer
diffusers/transformers until a node runs."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.host import HOST, comfy_importable

WEB_DIRECTORY = "./web"

if comfy_importable():
    from .nodes.comfy_host import ComfyHost

    HOST.install(ComfyHost())
    HOST.register_model_folders()
else:
    from .runtime.headless_host import HEADLESS

    HOST.install(HEADLESS)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
