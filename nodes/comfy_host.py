"""The host inside ComfyUI: every call maps to ComfyUI's own API (folder_paths,
comfy.utils.ProgressBar, comfy.model_management, server.PromptServer, comfy_execution).

ComfyUI modules are imported inside the methods, so that importing this file never fails
and costs nothing; the entry point only installs this host when ComfyUI is present."""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any, Optional

from .host import ALLOWED_DIRS_ENV, MODEL_EXTENSIONS, OUR_MODEL_FOLDERS, TRAINING_FOLDER

logger = logging.getLogger(__name__)


def _comfy(module: str):
    return importlib.import_module(module)


class ComfyHost:
    """Nodes running inside ComfyUI."""

    def input_directory(self) -> Path:
        return Path(_comfy("folder_paths").get_input_directory())

    def output_directory(self) -> Path:
        return Path(_comfy("folder_paths").get_output_directory())

    def temp_directory(self) -> Path:
        return Path(_comfy("folder_paths").get_temp_directory())

    def model_folders(self, kind: str) -> list[Path]:
        folder_paths = _comfy("folder_paths")
        try:
            return [Path(p) for p in folder_paths.get_folder_paths(kind)]
        except KeyError:
            return [Path(folder_paths.models_dir) / kind]

    def list_models(self, kind: str) -> list[str]:
        try:
            return list(_comfy("folder_paths").get_filename_list(kind))
        except KeyError:
            return []

    def resolve_model(self, kind: str, name: str) -> Path:
        try:
            found = _comfy("folder_paths").get_full_path(kind, name)
        except KeyError:
            found = None
        if found:
            return Path(found)
        folders = ", ".join(str(p) for p in self.model_folders(kind))
        raise FileNotFoundError(f"{kind} file {name!r} not found; looked in: {folders}")

    def register_model_folders(self) -> None:
        """Register this pack's own model folders with ComfyUI (kept if the user set them already),
        and the training step files as a further hypernetworks folder (after models/hypernetworks,
        which stays where new files are saved)."""
        folder_paths = _comfy("folder_paths")
        for kind in OUR_MODEL_FOLDERS:
            default = os.path.join(folder_paths.models_dir, kind)
            folder_paths.folder_names_and_paths.setdefault(kind, ([default], MODEL_EXTENSIONS[kind]))
        training = os.path.join(folder_paths.get_output_directory(), TRAINING_FOLDER)
        folder_paths.add_model_folder_path("hypernetworks", training)

    def read_roots(self) -> Optional[list[Path]]:
        allowed = [Path(p) for p in os.environ.get(ALLOWED_DIRS_ENV, "").split(os.pathsep) if p.strip()]
        return [self.input_directory(), self.output_directory(), *allowed]

    def examples_hint(self) -> str:
        return "Put your images under ComfyUI's input folder and name that folder here."

    def torch_device(self) -> Any:
        return _comfy("comfy.model_management").get_torch_device()

    def training_processes(self) -> None:
        """ComfyUI runs one process per server; to train on several GPUs, run the workflow with torchrun."""
        return None

    def load_model_for_training(self, model: Any, memory_required: float = 0.0) -> None:
        """Fully loaded, as ComfyUI's own trainer does (partially loaded weights would need
        autograd-aware offloading), with `memory_required` bytes kept free for the activations."""
        _comfy("comfy.model_management").load_models_gpu([model], memory_required=memory_required,
                                                          force_full_load=True)

    def progress_bar(self, total: int, node_id: Optional[str] = None) -> Any:
        return _comfy("comfy.utils").ProgressBar(total, node_id=node_id or self.current_node_id())

    def interrupt_requested(self) -> bool:
        return bool(_comfy("comfy.model_management").processing_interrupted())

    def throw_if_interrupted(self) -> None:
        _comfy("comfy.model_management").throw_exception_if_processing_interrupted()

    def is_interrupt(self, exc: BaseException) -> bool:
        return isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "InterruptProcessingException"

    def send_event(self, event: str, data: dict) -> None:
        server = self._server()
        if server is not None:
            server.send_sync(event, data, server.client_id)

    def send_progress_text(self, text: str, node_id: Optional[str]) -> None:
        server = self._server()
        if server is not None:
            server.send_progress_text(text, node_id)

    def wrote(self, path: Path) -> None:
        logger.info("wrote %s", path)

    def current_node_id(self) -> Optional[str]:
        try:
            context = _comfy("comfy_execution.utils").get_executing_context()
        except (ImportError, AttributeError):
            return None
        return None if context is None else str(context.node_id)

    def builtin_node(self, node_type: str) -> type:
        return _comfy("nodes").NODE_CLASS_MAPPINGS[node_type]  # ComfyUI's top-level nodes.py

    @staticmethod
    def _server() -> Any:
        try:
            return _comfy("server").PromptServer.instance
        except (ImportError, AttributeError):
            return None
