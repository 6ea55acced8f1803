"""Finding the model files the dataset nodes use (Deepbooru, WD14, YuNet) in the host's folders.

Nothing is ever downloaded: a missing file is an InputError for the input that named it,
saying which file goes where and where to get it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..hypernet.errors import InputError
from .host import HOST

Explain = Callable[[str, Sequence[Path]], str]


def model_choices(kind: str, fallback: str) -> list[str]:
    """Files of a model folder for a combo; the expected name when empty, so the error can explain."""
    return HOST.list_models(kind) or [fallback]


def model_file(kind: str, name: str, explain: Explain, path_override: str = "") -> Path:
    """An explicit path (input 'model_path') wins; else file `name` of the `kind` folder (input
    'model'); else an InputError whose text `explain(name, folders)` writes."""
    if path_override and path_override.strip():
        path = Path(os.path.expanduser(path_override.strip()))
        if not path.is_file():
            raise InputError("model_path", explain(str(path), [path.parent]))
        return path
    try:
        return HOST.resolve_model(kind, name)
    except FileNotFoundError:
        raise InputError("model", explain(name, HOST.model_folders(kind))) from None


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
    path = Path(os.path.expanduser(name))
    try:
        path = path if path.is_absolute() else HOST.resolve_model("facedetect", name)
    except FileNotFoundError as exc:
        raise InputError("face_model", str(exc)) from None
    if not path.is_file():
        raise InputError("face_model", f"YuNet file not found: {path}")
    return path
