"""Offline face detection for focal-point cropping: OpenCV Haar cascades or a user's YuNet ONNX.

Never downloads anything. OpenCV is optional (the `vision` extra): without it, or with an
OpenCV build that lacks Haar cascades (5.x), detection is off and one warning says why."""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .options import FACE_DETECTORS

if TYPE_CHECKING:
    import cv2

logger = logging.getLogger(__name__)

# Cascade file, minimum size as a fraction of the short side; tried in order, first hit wins
# (the order and fractions A1111 uses).
HAAR_CASCADES: tuple[tuple[str, float], ...] = (
    ("haarcascade_eye.xml", 0.01),
    ("haarcascade_frontalface_default.xml", 0.05),
    ("haarcascade_profileface.xml", 0.05),
    ("haarcascade_frontalface_alt.xml", 0.05),
    ("haarcascade_frontalface_alt2.xml", 0.05),
    ("haarcascade_frontalface_alt_tree.xml", 0.05),
    ("haarcascade_eye_tree_eyeglasses.xml", 0.05),
    ("haarcascade_upperbody.xml", 0.05),
)
YUNET_MAX_SIDE = 640  # YuNet misses very large faces; detect on a copy no larger than this


def _import_cv2() -> Optional[ModuleType]:
    """cv2, or None when OpenCV is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _chosen_cv2() -> ModuleType:
    """cv2, for code that runs only once a detection backend was chosen (each one needs OpenCV)."""
    cv2 = _import_cv2()
    if cv2 is None:
        raise RuntimeError("face detection needs OpenCV, which is not installed")
    return cv2


def _haar_cascade(file_name: str) -> Any:  # a cv2.CascadeClassifier
    cv2 = _chosen_cv2()
    return cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, file_name))


# Loaded cascades not in use, by file name. A CascadeClassifier keeps per-image state while it
# detects, so two prep workers must never share one: each borrows its own (loading one takes
# about 20 ms, so they are kept for the next picture and the next run).
_FREE_CASCADES: dict[str, list[Any]] = {}
_FREE_CASCADES_LOCK = threading.Lock()


@contextmanager
def _borrowed_cascade(file_name: str) -> Iterator[Any]:
    """A cascade for `file_name` that no other thread uses until this one gives it back."""
    with _FREE_CASCADES_LOCK:
        free = _FREE_CASCADES.setdefault(file_name, [])
        cascade = free.pop() if free else None
    if cascade is None:
        cascade = _haar_cascade(file_name)
    try:
        yield cascade
    finally:
        with _FREE_CASCADES_LOCK:
            _FREE_CASCADES.setdefault(file_name, []).append(cascade)


def haar_available() -> bool:
    """True when the installed OpenCV ships CascadeClassifier and its Haar XML files (4.x)."""
    cv2 = _import_cv2()
    if cv2 is None or not hasattr(cv2, "CascadeClassifier"):
        return False
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        return False
    return os.path.isfile(os.path.join(folder, HAAR_CASCADES[1][0]))


class FaceDetector:
    """Finds face points (x, y) in an RGB uint8 array. `warnings` explains any fallback.

    method: "auto" (YuNet if a model path is given, else Haar if available, else off),
    "haar", "yunet" (needs `yunet_path`) or "none". `a1111_compat` feeds YuNet the full-size RGB
    array as A1111 does (its colour-order bug included) instead of a BGR copy of at most 640 px."""

    def __init__(self, method: str = "auto", yunet_path: Optional[str | Path] = None, a1111_compat: bool = False):
        if method not in FACE_DETECTORS:
            raise ValueError(f"face detector {method!r}: choose one of {', '.join(FACE_DETECTORS)}")
        self.a1111_compat = a1111_compat
        self.warnings: list[str] = []
        self.backend = self._choose_backend(method, Path(yunet_path) if yunet_path else None)
        self.yunet_path = Path(yunet_path) if yunet_path else None
        self._free_yunets: list[cv2.FaceDetectorYN] = []  # made on first use, one per thread at a time
        self._free_yunets_lock = threading.Lock()

    def _choose_backend(self, method: str, yunet_path: Optional[Path]) -> str:
        if method == "none":
            return "none"
        cv2 = _import_cv2()
        if cv2 is None:
            self._warn("OpenCV is not installed, so face detection is off "
                       "(pip install opencv-python-headless, or the pack's [vision] extra)")
            return "none"
        if method in ("auto", "yunet") and yunet_path is not None:
            if not yunet_path.is_file():
                raise FileNotFoundError(f"YuNet face model not found: {yunet_path}")
            if hasattr(cv2, "FaceDetectorYN"):
                return "yunet"
            self._warn(f"OpenCV {cv2.__version__} has no FaceDetectorYN; YuNet model ignored")
        elif method == "yunet":
            raise ValueError("face detector 'yunet' needs a YuNet .onnx file "
                             "(e.g. face_detection_yunet_2023mar.onnx from opencv_zoo) in the facedetect folder")
        if haar_available():
            return "haar"
        self._warn(f"OpenCV {cv2.__version__} ships no Haar cascades (OpenCV 5 removed them); face detection "
                   "is off unless you provide a YuNet .onnx file")
        return "none"

    def _warn(self, message: str) -> None:
        logger.warning(message)
        self.warnings.append(message)

    def detect(self, rgb: np.ndarray) -> list[tuple[float, float]]:
        """Face points in pixel coordinates of `rgb` (uint8 [H,W,3])."""
        if self.backend == "haar":
            return self._detect_haar(rgb)
        if self.backend == "yunet":
            return self._detect_yunet(rgb)
        return []

    def _detect_haar(self, rgb: np.ndarray) -> list[tuple[float, float]]:
        cv2 = _chosen_cv2()
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        short_side = min(gray.shape[:2])
        for file_name, min_fraction in HAAR_CASCADES:
            min_size = int(short_side * min_fraction)
            with _borrowed_cascade(file_name) as cascade:
                rects = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=7, minSize=(min_size, min_size),
                                                 flags=cv2.CASCADE_SCALE_IMAGE)
            # len(), not truthiness: A1111's `if faces:` raises on a NumPy array with hits.
            if len(rects) > 0:
                return [(x + w / 2, y + h / 2) for (x, y, w, h) in rects]
        return []

    def _detect_yunet(self, rgb: np.ndarray) -> list[tuple[float, float]]:
        cv2 = _chosen_cv2()
        height, width = rgb.shape[:2]
        scale = 1.0 if self.a1111_compat else min(1.0, YUNET_MAX_SIDE / max(height, width))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                                                    interpolation=cv2.INTER_AREA)
        with self._free_yunets_lock:
            yunet = self._free_yunets.pop() if self._free_yunets else None
        if yunet is None:
            size = (small.shape[1], small.shape[0])
            yunet = cv2.FaceDetectorYN.create(str(self.yunet_path), "", size, 0.9, 0.3, 5000)
        try:
            yunet.setInputSize((small.shape[1], small.shape[0]))
            # YuNet expects BGR (A1111 feeds it RGB).
            _, faces = yunet.detect(small if self.a1111_compat else cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        finally:
            with self._free_yunets_lock:
                self._free_yunets.append(yunet)
        if faces is None:
            return []
        return [((x + 0.5 * w) / scale, (y + 0.33 * h) / scale) for x, y, w, h in faces[:, :4]]
