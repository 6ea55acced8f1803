"""The one seam between the nodes and whatever runs them.

Nodes ask the host for folders, model files, the torch device, progress bars, interrupts and
frontend events, always through `HOST`. Two hosts implement the `Host` protocol: `ComfyHost`
(nodes/comfy_host.py, nothing but ComfyUI calls) inside ComfyUI, and the headless runtime's
(runtime/headless_host.py). The pack's entry point installs one of them once (install_host, run when
ComfyUI first reads the node mappings, or by the headless runtime); nothing else ever asks which one
is running."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Optional, Protocol

# Model folder kinds this pack uses, with the file extensions each lists. `hypernetworks` and
# `checkpoints` already exist in ComfyUI; the others are registered by the ComfyUI host.
MODEL_EXTENSIONS: dict[str, set[str]] = {
    "checkpoints": {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"},
    "hypernetworks": {".pt", ".safetensors", ".pth", ".bin", ".ckpt", ".sft"},
    "deepbooru": {".pt", ".pth", ".safetensors"},
    "wd14_tagger": {".onnx"},
    "facedetect": {".onnx"},
}
OUR_MODEL_FOLDERS = ("deepbooru", "wd14_tagger", "facedetect")
# Where Train Hypernet keeps a run's step files, previews and CSV, under the output folder. Load
# Hypernet lists the step files too (as hypernetworks), so a run can be resumed from them.
TRAINING_FOLDER = "hypernet_training"
# Inside ComfyUI, folders a workflow names are read only under the input and output folders and
# these (os.pathsep-separated), which the server's owner sets: any client may send a workflow.
ALLOWED_DIRS_ENV = "HYPERNET_STUDIO_ALLOWED_DIRS"


class ProgressBar(Protocol):
    """comfy.utils.ProgressBar's interface."""

    def update(self, value: int) -> None: ...

    def update_absolute(self, value: int, total: Optional[int] = None, preview: Any = None) -> None: ...


class Host(Protocol):
    """What a node may ask of the program running it."""

    def input_directory(self) -> Path: ...

    def output_directory(self) -> Path: ...

    def temp_directory(self) -> Path: ...

    def model_folders(self, kind: str) -> list[Path]:
        """Every folder searched for models of `kind`; the first is where new files go."""

    def list_models(self, kind: str) -> list[str]:
        """Sorted relative names of the model files of `kind` (cheap: runs on every page load)."""

    def resolve_model(self, kind: str, name: str) -> Path:
        """The full path of model `name`; FileNotFoundError naming the folders searched."""

    def read_roots(self) -> Optional[list[Path]]:
        """The folders a workflow may read from by name, or None for anywhere (headless: the
        user runs it on their own machine)."""

    def examples_hint(self) -> str:
        """What to do when an example input is missing (a sentence, or "")."""

    def torch_device(self) -> Any: ...

    def training_processes(self) -> Any:
        """The torchrun launch this process is part of (hypernet.train.distributed's
        TrainingProcesses), or None for one process, as always inside ComfyUI."""

    def load_model_for_training(self, model: Any, memory_required: float = 0.0) -> None:
        """Put a MODEL's weights fully on the compute device before a training loop, keeping
        `memory_required` bytes free for the activations; called again after an eviction."""

    def progress_bar(self, total: int, node_id: Optional[str] = None) -> ProgressBar: ...

    def interrupt_requested(self) -> bool:
        """Non-raising check, so a trainer can save before it stops."""

    def throw_if_interrupted(self) -> None:
        """Raise the host's interrupt exception if the user asked to stop."""

    def is_interrupt(self, exc: BaseException) -> bool: ...

    def send_event(self, event: str, data: dict) -> None:
        """A custom event for the frontend (a live chart, say)."""

    def send_progress_text(self, text: str, node_id: Optional[str]) -> None: ...

    def wrote(self, path: Path) -> None:
        """Report a file a node wrote (headless: a `wrote PATH` line)."""

    def current_node_id(self) -> Optional[str]:
        """The id of the node being executed, if the host knows it."""

    def builtin_node(self, node_type: str) -> type:
        """The host's own class of a core node (KSampler, CLIPTextEncode, VAEDecode,
        EmptyLatentImage): a node that samples through it gives the very pictures that node gives
        in this host. KeyError for a type the host does not have."""


class _InstalledHost:
    """Forwards every call to the host installed by the pack's entry point."""

    def __init__(self) -> None:
        self._host: Optional[Host] = None

    def install(self, host: Host) -> None:
        self._host = host

    @property
    def installed(self) -> Host:
        if self._host is None:
            raise RuntimeError("no host installed: call hypernet_studio.install_host() first (ComfyUI and the "
                               "headless runtime do)")
        return self._host

    def __getattr__(self, name: str) -> Any:
        return getattr(self.installed, name)


HOST = _InstalledHost()


def comfy_importable() -> bool:
    """True inside ComfyUI: its `folder_paths` and `comfy.model_management` modules can be found
    (found, not imported, so the check costs nothing elsewhere)."""
    try:
        return (importlib.util.find_spec("folder_paths") is not None
                and importlib.util.find_spec("comfy") is not None
                and importlib.util.find_spec("comfy.model_management") is not None)
    except (ImportError, ValueError):
        return False
