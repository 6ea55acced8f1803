"""Focal point of an image: weighted centroid of face, entropy and edge points.

Behaviour follows A1111's autocrop (docs/preprocessing.md). By default two of its quirks are
fixed: the entropy score is real Shannon entropy of a 256-bin gray histogram (A1111 scores
a dithered 2-bin image with -sum(log2 p), which favours flat windows), and an image with no
points at all is centred instead of cropped from the top-left corner. `a1111_compat=True`
restores both."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from .faces import FaceDetector

CATEGORY_COLOURS = {"edges": "#0000ff", "entropy": "#ffff00", "face": "#ff0000"}
RESULT_COLOUR = "#00ff00"
ENTROPY_STEP = 4  # window stride in pixels (A1111)


@dataclass
class FocalWeights:
    """Relative importance of each detector; a zero weight skips the detector."""

    face: float = 0.9
    entropy: float = 0.15
    edges: float = 0.5


@dataclass
class FocalCategory:
    """The points one detector found, their centroid and normalised weight."""

    points: list[tuple[float, float]]
    centroid: tuple[float, float]
    weight: float


@dataclass
class FocalResult:
    """The focal point in the coordinates of the analysed image, with its evidence."""

    point: tuple[int, int]
    categories: dict[str, FocalCategory] = field(default_factory=dict)
    used_fallback: bool = False


# --------------------------------------------------------------------------- edges
def edge_points(gray: np.ndarray, max_corners: int = 100, quality: float = 0.04) -> list[tuple[float, float]]:
    """Shi-Tomasi corners (A1111's parameters); the bottom 10% is grayed out as a watermark guard."""
    gray = gray.copy()
    height, width = gray.shape
    gray[int(height * 0.9):, :] = 153
    min_distance = 0.06 * min(width, height)
    try:
        import cv2
    except ImportError:
        return _shi_tomasi_numpy(gray, max_corners, quality, min_distance)
    corners = cv2.goodFeaturesToTrack(gray, maxCorners=max_corners, qualityLevel=quality,
                                      minDistance=min_distance, useHarrisDetector=False)
    if corners is None:
        return []
    return [(float(x), float(y)) for x, y in corners.reshape(-1, 2)]


def _shi_tomasi_numpy(gray: np.ndarray, max_corners: int, quality: float,
                      min_distance: float) -> list[tuple[float, float]]:
    """cv2-free Shi-Tomasi: min eigenvalue of the 3x3 structure tensor, greedy spacing.

    Not point-identical to OpenCV (Sobel aperture and borders differ) but finds the same corners."""
    image = gray.astype(np.float32) / 255.0
    dy, dx = np.gradient(image)

    def box3(a: np.ndarray) -> np.ndarray:
        padded = np.pad(a, 1, mode="edge")
        return sum((padded[i:i + a.shape[0], j:j + a.shape[1]] for i in range(3) for j in range(3)),
                   np.zeros_like(a))

    sxx, syy, sxy = box3(dx * dx), box3(dy * dy), box3(dx * dy)
    response = (sxx + syy) / 2 - np.sqrt(((sxx - syy) / 2) ** 2 + sxy ** 2)
    peak = float(response.max(initial=0.0))
    if peak <= 0:
        return []
    padded = np.pad(response, 1, mode="constant", constant_values=-np.inf)
    local_max = np.max(np.stack([padded[i:i + response.shape[0], j:j + response.shape[1]]
                                 for i in range(3) for j in range(3)]), axis=0)
    ys, xs = np.nonzero((response >= quality * peak) & (response == local_max))
    order = np.argsort(-response[ys, xs], kind="stable")
    chosen: list[tuple[float, float]] = []
    for index in order:
        x, y = float(xs[index]), float(ys[index])
        if all((x - cx) ** 2 + (y - cy) ** 2 >= min_distance ** 2 for cx, cy in chosen):
            chosen.append((x, y))
            if len(chosen) >= max_corners:
                break
    return chosen


# --------------------------------------------------------------------------- entropy
def window_starts(long_side: int, window: int, include_last: bool) -> list[int]:
    """Window offsets along the long axis in 4-px steps.

    A1111 stops while the far edge is still inside (x + window < long side), so the last
    position is skipped; our default adds it so the far end of the image can win."""
    starts = list(range(0, max(0, long_side - window), ENTROPY_STEP))
    if include_last and long_side >= window and (not starts or starts[-1] != long_side - window):
        starts.append(long_side - window)
    return starts


def shannon_entropies(gray: np.ndarray, window: int, axis: int, starts: list[int]) -> np.ndarray:
    """Shannon entropy (bits) of the 256-bin histogram of each full-width window along `axis`.

    Vectorised with cumulative per-line histograms, so a scan costs one pass over the image."""
    lines = gray if axis == 0 else gray.T  # rows along the sliding axis
    n_lines = lines.shape[0]
    codes = (np.arange(n_lines, dtype=np.int64)[:, None] * 256 + lines.astype(np.int64)).ravel()
    per_line = np.bincount(codes, minlength=n_lines * 256).reshape(n_lines, 256)
    cumulative = np.vstack([np.zeros((1, 256), dtype=np.int64), np.cumsum(per_line, axis=0)])
    starts_array = np.asarray(starts, dtype=np.int64)
    histograms = (cumulative[starts_array + window] - cumulative[starts_array]).astype(np.float64)
    probabilities = histograms / histograms.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * np.log2(probabilities), 0.0)
    return -terms.sum(axis=1)


def a1111_two_bin_score(crop: Image.Image) -> float:
    """A1111's "entropy": -sum(log2 p) over the bins of the dithered 1-bit crop."""
    band = np.asarray(crop.convert("1"), dtype=np.uint8)
    counts = np.bincount(band.ravel(), minlength=2).astype(np.float64)
    counts = counts[counts > 0]
    return float(-np.log2(counts / counts.sum()).sum())


def entropy_points(image: Image.Image, target: tuple[int, int], a1111_compat: bool = False
                   ) -> list[tuple[float, float]]:
    """Centre of the highest-entropy target-sized window sliding along the long axis ([] if none)."""
    width, height = image.size
    target_w, target_h = target
    if a1111_compat:
        if width == height:
            return []
        along_x = width > height
    else:
        # Slide along the axis the scaled image overflows (cover scale leaves only one).
        if width <= target_w and height <= target_h:
            return []
        along_x = (width - target_w) >= (height - target_h)
    long_side, window = (width, target_w) if along_x else (height, target_h)
    starts = window_starts(long_side, window, include_last=not a1111_compat)
    if not starts:
        return []
    if a1111_compat:
        scores = [a1111_two_bin_score(image.crop((s, 0, s + target_w, target_h) if along_x
                                                 else (0, s, target_w, s + target_h))) for s in starts]
        best = starts[int(np.argmax(scores))]  # argmax = first maximum, like A1111's strict ">"
    else:
        gray = np.asarray(image.convert("L"))
        entropies = shannon_entropies(gray, window, axis=1 if along_x else 0, starts=starts)
        if np.ptp(entropies) < 1e-9:
            return []  # every window alike: entropy has no opinion, don't pull towards the first one
        best = starts[int(np.argmax(entropies))]
    if along_x:
        return [(float(best + int(target_w / 2)), float(int(target_h / 2)))]
    return [(float(int(target_w / 2)), float(best + int(target_h / 2)))]


# --------------------------------------------------------------------------- combine
def combine_points(categories: dict[str, list[tuple[float, float]]], weights: FocalWeights,
                   size: tuple[int, int], a1111_compat: bool = False) -> FocalResult:
    """Weighted mean of each category's centroid (weights renormalised over the categories found)."""
    found = {name: points for name, points in categories.items() if points and getattr(weights, name) > 0}
    total = sum(getattr(weights, name) for name in found)
    result = FocalResult(point=(0, 0))
    if not found or total <= 0:
        result.used_fallback = True
        result.point = (0, 0) if a1111_compat else (size[0] // 2, size[1] // 2)
        return result
    fx = fy = 0.0
    for name, points in found.items():
        centroid = (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))
        weight = getattr(weights, name) / total
        result.categories[name] = FocalCategory(points=list(points), centroid=centroid, weight=weight)
        fx += centroid[0] * weight
        fy += centroid[1] * weight
    result.point = (round(fx), round(fy))
    return result


def find_focal_point(image: Image.Image, target: tuple[int, int], weights: FocalWeights,
                     face_detector: Optional[FaceDetector] = None, a1111_compat: bool = False) -> FocalResult:
    """Run the enabled detectors on `image` (already scaled to crop size) and combine them."""
    categories: dict[str, list[tuple[float, float]]] = {}
    if weights.edges > 0:
        categories["edges"] = edge_points(np.asarray(image.convert("L")))
    if weights.entropy > 0:
        categories["entropy"] = entropy_points(image, target, a1111_compat)
    if weights.face > 0 and face_detector is not None:
        categories["face"] = face_detector.detect(np.asarray(image.convert("RGB")))
    return combine_points(categories, weights, image.size, a1111_compat)


def draw_focal_debug(image: Image.Image, result: FocalResult, crop_box: tuple[int, int, int, int]) -> Image.Image:
    """The analysed image with each category's points and centroid, the focal point and the crop."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    base = 0.07 * min(canvas.size)
    for name, category in result.categories.items():
        colour = CATEGORY_COLOURS[name]
        for x, y in category.points:
            draw.rectangle((x - 2, y - 2, x + 2, y + 2), outline=colour)
        radius = max(2.0, base * category.weight / 2)
        cx, cy = category.centroid
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=colour, width=2)
        draw.text((cx + radius + 2, cy - 6), f"{name.title()}: {category.weight:.2f}", fill=colour)
    fx, fy = result.point
    draw.ellipse((fx - 4, fy - 4, fx + 4, fy + 4), fill=RESULT_COLOUR)
    draw.rectangle(crop_box, outline=RESULT_COLOUR, width=2)
    return canvas
