"""The headless host: what the nodes get from their runner when there is no ComfyUI.

Folders follow ComfyUI's layout under a base directory (`$HYPERNET_STUDIO_HOME`, else the
current directory), each overridable; the executor installs its progress factory, event sink
and the id of the node it runs; Ctrl-C sets `interrupt`. The defaults make plain library use
and tests work with no configuration at all."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..nodes.host import MODEL_EXTENSIONS, TRAINING_FOLDER


class InterruptedByUser(Exception):
    """Raised headless when the user interrupts (Ctrl-C); ComfyUI raises its own type."""


class _SilentProgress:
    """A progress bar that shows nothing but still checks for an interrupt, as ComfyUI's does."""

    def __init__(self, host: "HeadlessHost", total: int):
        self.host, self.total, self.current = host, total, 0

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)

    def update_absolute(self, value: int, total: Optional[int] = None, preview: Any = None) -> None:
        self.host.throw_if_interrupted()
        self.current = value
        if total is not None:
            self.total = total


@dataclass
class HeadlessHost:
    """The settings the runtime (or a test) gives the nodes, and the Host calls built on them."""

    base_dir: Path = field(default_factory=lambda: Path(os.environ.get("HYPERNET_STUDIO_HOME", ".")).resolve())
    input_dir: Optional[Path] = None
    output_dir: Optional[Path] = None
    temp_dir: Optional[Path] = None
    models_dir: Optional[Path] = None
    device: str = "auto"
    interrupt: threading.Event = field(default_factory=threading.Event)
    # event(name, data) -> None; the executor installs one that forwards events to its callback.
    event_sink: Optional[Callable[[str, dict], None]] = None
    # progress_factory(total, node_id) -> a ProgressBar; the executor installs one (tqdm in a terminal).
    progress_factory: Optional[Callable[[int, Optional[str]], Any]] = None
    running_node_id: Optional[str] = None

    def configure(self, **settings: Any) -> "HeadlessHost":
        """Update settings by name (base_dir, input_dir, output_dir, models_dir, device, ...)."""
        for key, value in settings.items():
            if not hasattr(self, key):
                raise TypeError(f"unknown headless setting {key!r}")
            if key.endswith("_dir") and value is not None:
                value = Path(value).resolve()
            setattr(self, key, value)
        return self

    def _folder(self, name: str) -> Path:
        explicit = getattr(self, f"{name}_dir")
        return Path(explicit).resolve() if explicit else self.base_dir / name

    # ------------------------------------------------------------------ folders
    def input_directory(self) -> Path:
        return self._folder("input")

    def output_directory(self) -> Path:
        return self._folder("output")

    def temp_directory(self) -> Path:
        return self._folder("temp")

    def model_folders(self, kind: str) -> list[Path]:
        folders = [self._folder("models") / kind]
        if kind == "hypernetworks":  # a run's step files, to resume from (as inside ComfyUI)
            folders.append(self._folder("output") / TRAINING_FOLDER)
        return folders

    def read_roots(self) -> Optional[list[Path]]:
        return None

    def examples_hint(self) -> str:
        return "Run `hypernet-studio examples` to write the inputs the shipped workflows read."

    def list_models(self, kind: str) -> list[str]:
        extensions = MODEL_EXTENSIONS.get(kind)
        names: set[str] = set()
        for root in self.model_folders(kind):
            if root.is_dir():
                names.update(path.relative_to(root).as_posix() for path in root.rglob("*")
                             if path.is_file() and (extensions is None or path.suffix.lower() in extensions))
        return sorted(names)

    def resolve_model(self, kind: str, name: str) -> Path:
        for root in self.model_folders(kind):
            candidate = root / name
            if candidate.exists():
                return candidate
        folders = ", ".join(str(p) for p in self.model_folders(kind))
        raise FileNotFoundError(f"{kind} file {name!r} not found; looked in: {folders}")

    # ------------------------------------------------------------------ device
    def torch_device(self) -> Any:
        """The device setting; under torchrun, CUDA means this process's GPU (LOCAL_RANK), and a
        setting naming another GPU is refused."""
        import torch

        wanted = self.device
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(wanted)
        processes = self.training_processes()
        if processes is None or device.type != "cuda":
            return device
        if device.index is not None and device.index != processes.local_rank:
            # Every process gets the same setting: one GPU named for all would put them all on it.
            raise ValueError(f"device {wanted!r} under torchrun: every process would use that one GPU; "
                             f"use 'cuda', and each process takes the GPU of its LOCAL_RANK "
                             f"(this one: cuda:{processes.local_rank})")
        return torch.device("cuda", processes.local_rank)

    def training_processes(self) -> Any:
        """The torchrun launch described by the environment (RANK, WORLD_SIZE, LOCAL_RANK), or None."""
        from ..hypernet.train.distributed import TrainingProcesses

        return TrainingProcesses.from_environment()

    @property
    def rank(self) -> int:
        """This process's rank in a torchrun launch (0 when alone): only rank 0 reports and writes."""
        processes = self.training_processes()
        return processes.rank if processes is not None else 0

    def load_model_for_training(self, model: Any, memory_required: float = 0.0) -> None:
        """Headless models already sit where they compute."""

    # ------------------------------------------------------------------ progress, interrupt, events
    def progress_bar(self, total: int, node_id: Optional[str] = None) -> Any:
        node_id = node_id if node_id is not None else self.running_node_id
        if self.progress_factory is not None:
            return self.progress_factory(total, node_id)
        return _SilentProgress(self, total)

    def interrupt_requested(self) -> bool:
        return self.interrupt.is_set()

    def throw_if_interrupted(self) -> None:
        if self.interrupt.is_set():
            self.interrupt.clear()
            raise InterruptedByUser("interrupted by user")

    def is_interrupt(self, exc: BaseException) -> bool:
        return isinstance(exc, (InterruptedByUser, KeyboardInterrupt))

    def send_event(self, event: str, data: dict) -> None:
        if self.event_sink is not None:
            self.event_sink(event, data)

    def send_progress_text(self, text: str, node_id: Optional[str]) -> None:
        self.send_event("progress_text", {"node": node_id, "text": text})

    def wrote(self, path: Path) -> None:
        self.send_event("wrote", {"node": self.running_node_id, "path": str(path)})

    def current_node_id(self) -> Optional[str]:
        return self.running_node_id

    def builtin_node(self, node_type: str) -> type:
        """The stand-in for ComfyUI's core node (runtime/standins.py)."""
        from .standins import NODE_CLASS_MAPPINGS

        return NODE_CLASS_MAPPINGS[node_type]


HEADLESS = HeadlessHost()
