"""The one module that touches ComfyUI.

Everything a node needs from its host -- folders, progress, interrupt, events to the
frontend, the torch device -- goes through here. Inside ComfyUI each call maps to
ComfyUI's own API (folder_paths, comfy.utils.ProgressBar, comfy.model_management,
server.PromptServer). Headless, each call falls back to `HEADLESS`, a small settings
object that `runtime/` configures; its defaults make plain library use and tests work
with no configuration at all.

ComfyUI modules are imported lazily, inside functions, so that importing this module
never imports ComfyUI and never fails without it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

# Model folder kinds this pack uses, with the file extensions each lists.
# `hypernetworks` and `checkpoints` already exist in ComfyUI; the others are registered
# by `register_model_folders()`.
MODEL_EXTENSIONS: dict[str, set[str]] = {
    "checkpoints": {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"},
    "hypernetworks": {".pt", ".safetensors", ".pth", ".bin", ".ckpt", ".sft"},
    "deepbooru": {".pt", ".pth", ".safetensors"},
    "wd14_tagger": {".onnx"},
    "facedetect": {".onnx"},
}
OUR_MODEL_FOLDERS = ("deepbooru", "wd14_tagger", "facedetect")


class InterruptedByUser(Exception):
    """Raised headless when the user interrupts (Ctrl-C); ComfyUI raises its own type."""


_comfy_available: Optional[bool] = None


def comfy_available() -> bool:
    """True when running inside ComfyUI (its `folder_paths` and `comfy` modules import)."""
    global _comfy_available
    if _comfy_available is None:
        try:
            _comfy_available = (
                importlib.util.find_spec("folder_paths") is not None
                and importlib.util.find_spec("comfy") is not None
                and importlib.util.find_spec("comfy.model_management") is not None
            )
        except (ImportError, ValueError):
            _comfy_available = False
    return _comfy_available


def _comfy(module: str):
    """Import a ComfyUI module by name (only call when comfy_available())."""
    return importlib.import_module(module)


# --------------------------------------------------------------------------- headless state
@dataclass
class HeadlessSettings:
    """What the headless runtime tells the adapter. Paths default under the current directory."""

    base_dir: Path = field(default_factory=lambda: Path(os.environ.get("HYPERNET_STUDIO_HOME", ".")).resolve())
    input_dir: Optional[Path] = None
    output_dir: Optional[Path] = None
    temp_dir: Optional[Path] = None
    models_dir: Optional[Path] = None
    device: str = "auto"
    interrupt: threading.Event = field(default_factory=threading.Event)
    # event(name, data) -> None; the runtime installs one that logs or forwards events.
    event_sink: Optional[Callable[[str, dict], None]] = None
    # progress_factory(total, node_id) -> object with update(n) / update_absolute(v, total, preview)
    progress_factory: Optional[Callable[[int, Optional[str]], Any]] = None
    current_node_id: Optional[str] = None

    def folder(self, name: str) -> Path:
        explicit = {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir,
                    "models": self.models_dir}[name]
        return Path(explicit).resolve() if explicit else self.base_dir / name


HEADLESS = HeadlessSettings()


def configure_headless(**settings: Any) -> HeadlessSettings:
    """Update the headless settings (base_dir, input_dir, output_dir, models_dir, device, ...)."""
    for key, value in settings.items():
        if not hasattr(HEADLESS, key):
            raise TypeError(f"unknown headless setting {key!r}")
        if key.endswith("_dir") and value is not None:
            value = Path(value).resolve()
        setattr(HEADLESS, key, value)
    return HEADLESS


# --------------------------------------------------------------------------- folders
def input_directory() -> Path:
    """ComfyUI's input folder, or `<base>/input` headless."""
    if comfy_available():
        return Path(_comfy("folder_paths").get_input_directory())
    return HEADLESS.folder("input")


def output_directory() -> Path:
    """ComfyUI's output folder, or `<base>/output` headless."""
    if comfy_available():
        return Path(_comfy("folder_paths").get_output_directory())
    return HEADLESS.folder("output")


def temp_directory() -> Path:
    """ComfyUI's temp folder (previews), or `<base>/temp` headless."""
    if comfy_available():
        return Path(_comfy("folder_paths").get_temp_directory())
    return HEADLESS.folder("temp")


def model_folders(kind: str) -> list[Path]:
    """All folders searched for models of `kind` (e.g. "hypernetworks"), first = save target."""
    if comfy_available():
        folder_paths = _comfy("folder_paths")
        try:
            return [Path(p) for p in folder_paths.get_folder_paths(kind)]
        except KeyError:
            return [Path(folder_paths.models_dir) / kind]
    return [HEADLESS.folder("models") / kind]


def model_save_folder(kind: str) -> Path:
    """Where new files of `kind` are written: the first registered folder."""
    return model_folders(kind)[0]


def list_models(kind: str) -> list[str]:
    """Sorted relative names of the model files of `kind` (cheap: runs on every page load)."""
    if comfy_available():
        try:
            return list(_comfy("folder_paths").get_filename_list(kind))
        except KeyError:
            pass
    extensions = MODEL_EXTENSIONS.get(kind)
    names: set[str] = set()
    for root in model_folders(kind):
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.is_file() and (extensions is None or path.suffix.lower() in extensions):
                names.add(path.relative_to(root).as_posix())
    return sorted(names)


def resolve_model(kind: str, name: str) -> Path:
    """Full path of model `name` of `kind`; FileNotFoundError names the folders searched."""
    if comfy_available():
        found = _comfy("folder_paths").get_full_path(kind, name)
        if found:
            return Path(found)
    else:
        for root in model_folders(kind):
            candidate = root / name
            if candidate.exists():
                return candidate
    folders = ", ".join(str(p) for p in model_folders(kind))
    raise FileNotFoundError(f"{kind} file {name!r} not found; looked in: {folders}")


def register_model_folders(pack_dir: Path) -> None:
    """Register this pack's own model folders with ComfyUI (no-op headless)."""
    if not comfy_available():
        return
    folder_paths = _comfy("folder_paths")
    for kind in OUR_MODEL_FOLDERS:
        default = os.path.join(folder_paths.models_dir, kind)
        folder_paths.folder_names_and_paths.setdefault(kind, ([default], MODEL_EXTENSIONS[kind]))


# --------------------------------------------------------------------------- device
def torch_device():
    """The device nodes should compute on."""
    import torch

    if comfy_available():
        return _comfy("comfy.model_management").get_torch_device()
    wanted = HEADLESS.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


def load_model_for_training(model: Any) -> None:
    """Put a MODEL's weights fully on the compute device before a training loop.

    Inside ComfyUI: model_management.load_models_gpu([model], force_full_load=True), as its own
    trainer does (partially loaded weights would need autograd-aware offloading). Headless
    models already sit where they compute, so there is nothing to do."""
    if comfy_available():
        _comfy("comfy.model_management").load_models_gpu([model], force_full_load=True)


# --------------------------------------------------------------------------- progress / interrupt / events
class _NullProgress:
    def __init__(self, total: int, node_id: Optional[str] = None):
        self.total, self.current = total, 0

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)

    def update_absolute(self, value: int, total: Optional[int] = None, preview: Any = None) -> None:
        throw_if_interrupted()
        self.current = value
        if total is not None:
            self.total = total


def progress_bar(total: int, node_id: Optional[str] = None):
    """A ProgressBar-compatible object: `.update(n)`, `.update_absolute(value, total, preview)`.

    Inside ComfyUI it is comfy.utils.ProgressBar (which also checks interrupt); headless the
    runtime's factory (tqdm in a terminal), else a silent one that still checks interrupt."""
    node_id = node_id if node_id is not None else HEADLESS.current_node_id
    if comfy_available():
        return _comfy("comfy.utils").ProgressBar(total, node_id=node_id)
    if HEADLESS.progress_factory is not None:
        return HEADLESS.progress_factory(total, node_id)
    return _NullProgress(total, node_id)


def interrupt_requested() -> bool:
    """Non-raising check, so a trainer can save before it stops."""
    if comfy_available():
        return bool(_comfy("comfy.model_management").processing_interrupted())
    return HEADLESS.interrupt.is_set()


def throw_if_interrupted() -> None:
    """Raise the host's interrupt exception if the user asked to stop."""
    if comfy_available():
        _comfy("comfy.model_management").throw_exception_if_processing_interrupted()
        return
    if HEADLESS.interrupt.is_set():
        HEADLESS.interrupt.clear()
        raise InterruptedByUser("interrupted by user")


def is_interrupt(exc: BaseException) -> bool:
    """True for the host's interrupt exception (ComfyUI's or ours)."""
    if isinstance(exc, (InterruptedByUser, KeyboardInterrupt)):
        return True
    return type(exc).__name__ == "InterruptProcessingException"


def send_event(event: str, data: dict) -> None:
    """Send a custom event to the frontend (PromptServer.send_sync), or to the headless sink."""
    if comfy_available():
        try:
            server = _comfy("server").PromptServer.instance
        except (ImportError, AttributeError):
            return
        server.send_sync(event, data, server.client_id)
        return
    if HEADLESS.event_sink is not None:
        HEADLESS.event_sink(event, data)


def send_progress_text(text: str, node_id: Optional[str]) -> None:
    """Show a line of text on the node (no JS needed in ComfyUI)."""
    if comfy_available():
        try:
            server = _comfy("server").PromptServer.instance
            server.send_progress_text(text, node_id)
        except (ImportError, AttributeError):
            pass
        return
    if HEADLESS.event_sink is not None:
        HEADLESS.event_sink("progress_text", {"node": node_id, "text": text})
