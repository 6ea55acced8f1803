"""A stand-in for the parts of ComfyUI that ComfyHost calls, over a folder layout like ComfyUI's:
folder_paths, comfy.model_management, comfy.utils.ProgressBar, server.PromptServer and
comfy_execution.utils, written from their documented behaviour. Installed into sys.modules for a
test, with ComfyHost as the pack's host."""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch

EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


class FakeComfy:
    def __init__(self, root: Path):
        self.root = root
        self.interrupted = False
        self.sent: list[tuple] = []
        self.executing_node: str | None = None
        for folder in ("input", "output", "temp", "models/checkpoints", "models/hypernetworks"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        self.folder_names_and_paths = {
            "checkpoints": ([str(root / "models" / "checkpoints")], set(EXTENSIONS)),
            "hypernetworks": ([str(root / "models" / "hypernetworks")], set(EXTENSIONS)),
        }

    def modules(self) -> dict[str, types.ModuleType]:
        folder_paths = types.ModuleType("folder_paths")
        folder_paths.models_dir = str(self.root / "models")
        folder_paths.folder_names_and_paths = self.folder_names_and_paths
        folder_paths.get_input_directory = lambda: str(self.root / "input")
        folder_paths.get_output_directory = lambda: str(self.root / "output")
        folder_paths.get_temp_directory = lambda: str(self.root / "temp")
        folder_paths.get_folder_paths = lambda kind: list(self.folder_names_and_paths[kind][0])
        folder_paths.get_filename_list = self.filename_list
        folder_paths.get_full_path = self.full_path
        folder_paths.add_model_folder_path = self.add_model_folder_path
        comfy = types.ModuleType("comfy")
        management = types.ModuleType("comfy.model_management")
        management.get_torch_device = lambda: torch.device("cpu")
        management.processing_interrupted = lambda: self.interrupted
        management.throw_exception_if_processing_interrupted = self.throw_if_interrupted
        management.load_models_gpu = lambda models, force_full_load=False: None
        utils = types.ModuleType("comfy.utils")
        utils.ProgressBar = self.progress_bar
        server = types.ModuleType("server")
        server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(
            client_id="client", send_sync=lambda *args: self.sent.append(("sync", *args)),
            send_progress_text=lambda *args: self.sent.append(("text", *args))))
        execution_utils = types.ModuleType("comfy_execution.utils")
        execution_utils.get_executing_context = lambda: (
            None if self.executing_node is None else types.SimpleNamespace(node_id=self.executing_node))
        return {"folder_paths": folder_paths, "comfy": comfy, "comfy.model_management": management,
                "comfy.utils": utils, "server": server, "comfy_execution": types.ModuleType("comfy_execution"),
                "comfy_execution.utils": execution_utils}

    def filename_list(self, kind: str) -> list[str]:
        folders, extensions = self.folder_names_and_paths[kind]
        names = set()
        for folder in map(Path, folders):
            if folder.is_dir():
                names.update(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                             if p.is_file() and (not extensions or p.suffix.lower() in extensions))
        return sorted(names)

    def full_path(self, kind: str, name: str):
        for folder in self.folder_names_and_paths[kind][0]:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
        return None

    def add_model_folder_path(self, kind: str, path: str, is_default: bool = False) -> None:
        folders, extensions = self.folder_names_and_paths.setdefault(kind, ([], set()))
        if path not in folders:
            folders.insert(0, path) if is_default else folders.append(path)

    def throw_if_interrupted(self) -> None:
        if self.interrupted:
            self.interrupted = False
            raise type("InterruptProcessingException", (Exception,), {})()

    def progress_bar(self, total, node_id=None):
        sent = self.sent

        class Bar:
            def update_absolute(self, value, total=None, preview=None):
                sent.append(("progress", node_id, value, total))

            def update(self, value):
                self.update_absolute(value)
        return Bar()


@pytest.fixture
def comfyui(tmp_path, monkeypatch):
    """ComfyUI's modules faked over tmp_path/comfy, and ComfyHost installed as the pack's host."""
    from hypernet_studio.nodes.comfy_host import ComfyHost
    from hypernet_studio.nodes.host import HOST
    from hypernet_studio.runtime.headless_host import HEADLESS

    fake = FakeComfy(tmp_path / "comfy")
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    host = ComfyHost()
    host.register_model_folders()
    HOST.install(host)
    yield fake
    HOST.install(HEADLESS)
