"""Hypernet Studio: the ComfyUI entry point (the repository root is the custom-node folder).

Outside ComfyUI the same package is importable as `hypernet_studio`, and importing it (or the
library under it, `hypernet_studio.hypernet`) imports neither the nodes nor the runtime and
installs no host. The node mappings are read lazily: the first read of NODE_CLASS_MAPPINGS or
NODE_DISPLAY_NAME_MAPPINGS, which ComfyUI does right after loading this file, imports the nodes
and installs the host they run against (install_host). The headless runtime installs it the
same way before it lists or runs nodes. Node modules defer diffusers/transformers until a node
runs, so reading the mappings stays cheap."""
from typing import Any

WEB_DIRECTORY = "./web"
_NODE_MAPPINGS = ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS")
_host_installed = False

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]


def install_host() -> None:
    """Install the nodes' host, once per process: ComfyUI's when ComfyUI is importable (its
    model folders registered), else the headless runtime's (runtime/headless_host.py)."""
    global _host_installed
    if _host_installed:
        return
    from .nodes.host import HOST, comfy_importable

    if comfy_importable():
        from .nodes.comfy_host import ComfyHost

        HOST.install(ComfyHost())
        HOST.register_model_folders()
    else:
        from .runtime.headless_host import HEADLESS

        HOST.install(HEADLESS)
    _host_installed = True


def __getattr__(name: str) -> Any:
    """NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS, imported (and the host installed) on
    first read, then kept as plain module attributes."""
    if name not in _NODE_MAPPINGS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import nodes

        install_host()
    except AttributeError as exc:
        # ComfyUI reads the mappings with hasattr(), which would take this for "no mappings"
        # and skip the pack without a word: report it as the import failure it is.
        raise ImportError(f"loading the nodes failed: {exc!r}") from exc
    for mapping in _NODE_MAPPINGS:
        globals()[mapping] = getattr(nodes, mapping)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *_NODE_MAPPINGS})
