"""Where the nodes read from: folders a workflow names, and model files (Deepbooru, WD14, YuNet),
under the host's read policy. Inside ComfyUI any client of a shared server can send a workflow, so
names are confined to ComfyUI's folders (and those its owner allows) and refusals say nothing about
what exists elsewhere. Nothing is ever downloaded: a missing file is an InputError for the input
that named it, saying which file goes where and where to get it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..hypernet.errors import InputError
from ..hypernet.files import UnsafePathError, check_name_text
from ..hypernet.train.encoding_cache import CACHE_OFF
from .host import ALLOWED_DIRS_ENV, HOST

Explain = Callable[[str, Sequence[Path]], str]


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == root.resolve() or root.resolve() in resolved.parents for root in roots)


def readable_folder(text: str, input_name: str = "folder") -> Path:
    """A folder named by a workflow: relative to the input folder, or absolute. Inside ComfyUI it
    must stay under the input or output folder (or one the owner allows) and '..' is refused."""
    text = (text or "").strip()
    if not text:
        raise InputError(input_name, "is empty: name a folder of images under the input folder")
    try:
        check_name_text(text)
    except UnsafePathError as exc:
        raise InputError(input_name, str(exc)) from None
    roots = HOST.read_roots()
    path = Path(os.path.expanduser(text))
    path = path if path.is_absolute() else HOST.input_directory() / path
    if roots is None:
        return path
    if ".." in Path(text.replace("\\", "/")).parts:
        raise InputError(input_name, f"{text!r}: '..' is not allowed; name a folder under the input folder")
    if not _inside(path, roots):
        raise InputError(input_name, f"{text!r} is outside the folders this server reads from "
                                     f"({', '.join(str(r) for r in roots)}); its owner can allow more in "
                                     f"{ALLOWED_DIRS_ENV}")
    return path.resolve()


def model_choices(kind: str, fallback: str) -> list[str]:
    """Files of a model folder for a combo; the expected name when empty, so the error can explain."""
    return HOST.list_models(kind) or [fallback]


def model_file(kind: str, name: str, explain: Explain, path_override: str = "") -> Path:
    """An explicit path (input 'model_path') wins; else file `name` of the `kind` folder (input
    'model'); else an InputError whose text `explain(name, folders)` writes."""
    if path_override and path_override.strip():
        path = _confined_model_path(kind, path_override, "model_path")
        if not path.is_file():
            raise InputError("model_path", explain(str(path), [path.parent]))
        return path
    try:
        return HOST.resolve_model(kind, name)
    except FileNotFoundError:
        raise InputError("model", explain(name, HOST.model_folders(kind))) from None


def _confined_model_path(kind: str, text: str, input_name: str) -> Path:
    """A model file given by path; inside ComfyUI only within the `kind` models folders, refused
    before anything about the path is looked at."""
    path = Path(os.path.expanduser(text.strip()))
    if HOST.read_roots() is None:
        return path
    folders = HOST.model_folders(kind)
    path = path if path.is_absolute() else folders[0] / path
    if ".." in Path(text.replace("\\", "/")).parts or not _inside(path, folders):
        raise InputError(input_name, f"must name a file inside the {kind} models folder "
                                     f"({', '.join(str(f) for f in folders)}); this server reads model files "
                                     "only from there")
    return path.resolve()


def yunet_file(name: str, detector: str) -> Optional[Path]:
    """The YuNet file for Auto Crop: a given name/path, else the first file of the facedetect
    folder; None when the detector does not use YuNet or (for 'auto') none is there."""
    if detector not in ("auto", "yunet"):
        return None
    name = (name or "").strip()
    if name:
        return _named_yunet_file(name)
    available = HOST.list_models("facedetect")
    if available:
        return HOST.resolve_model("facedetect", available[0])
    if detector == "yunet":
        folders = ", ".join(str(f) for f in HOST.model_folders("facedetect"))
        raise InputError("face_detector", f"is 'yunet' but no YuNet .onnx was given ('face_model') or found in "
                                          f"{folders}; get face_detection_yunet_2023mar.onnx from "
                                          "github.com/opencv/opencv_zoo (this pack never downloads models)")
    return None


def _named_yunet_file(name: str) -> Path:
    if Path(os.path.expanduser(name)).is_absolute():
        path = _confined_model_path("facedetect", name, "face_model")
    else:
        try:
            path = HOST.resolve_model("facedetect", name)
        except FileNotFoundError as exc:
            raise InputError("face_model", str(exc)) from None
    if not path.is_file():
        raise InputError("face_model", f"YuNet file not found: {path}")
    return path


def cache_folder(text: str, input_name: str = "cache_folder") -> Optional[Path]:
    """The persistent cache's folder (None: `CACHE_OFF` or empty, no cache): relative to the output
    folder, or absolute. Inside ComfyUI it must stay under the folders the server reads from (input,
    output, or those its owner allows) and '..' is refused. It must be a folder this process can
    write, or be creatable in one."""
    text = (text or "").strip()
    if not text or text.lower() == CACHE_OFF:
        return None
    try:
        check_name_text(text)
    except UnsafePathError as exc:
        raise InputError(input_name, str(exc)) from None
    path = Path(os.path.expanduser(text))
    path = path if path.is_absolute() else HOST.output_directory() / path
    roots = HOST.read_roots()
    if roots is not None:
        if ".." in Path(text.replace("\\", "/")).parts:
            raise InputError(input_name, f"{text!r}: '..' is not allowed; name a folder under the output folder")
        if not _inside(path, roots):
            raise InputError(input_name, f"{text!r} is outside the folders this server may use "
                                         f"({', '.join(str(r) for r in roots)}); its owner can allow more in "
                                         f"{ALLOWED_DIRS_ENV}, or set '{CACHE_OFF}'")
        path = path.resolve()
    _check_writable(path, text, input_name)
    return path


def _check_writable(path: Path, text: str, input_name: str) -> None:
    """`path` is a folder this process can write, or can be made in the nearest folder above it."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing == path and not path.is_dir():
        raise InputError(input_name, f"{text!r} is a file, not a folder")
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(input_name, f"{text!r}: {existing} cannot be written by this process; name a writable "
                                     f"folder, or set '{CACHE_OFF}'")
