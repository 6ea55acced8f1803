"""Crop geometry (focal, center, split-oversized, auto-sized, fill, stretch) and its rendering.

Every method first produces `CropPlan`s: pure geometry in source pixels, so boxes can be
reported as JSON and tested exactly. `render_plan` then resamples the source region once
with LANCZOS (image and mask alike). Behaviour follows docs/preprocessing.md; our
defaults fix A1111's bugs, `a1111_compat=True` reproduces its boxes."""
from __future__ import annotations

import math
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from .faces import FaceDetector
from .focal import FocalResult, FocalWeights, draw_focal_debug, find_focal_point
from .lists import DatasetLists
from .options import AUTO_SIZE_OBJECTIVES, CROP_METHODS
from .workers import imap_in_workers


@dataclass(frozen=True)
class CropPlan:
    """Take `box` of the source (x0, y0, x1, y1, floats, inside the image), resize it to
    `region_size`, paste it at `offset` on a `canvas` sized output; `fill` says how any
    uncovered canvas is filled ("black" or "edge" replication)."""

    box: tuple[float, float, float, float]
    region_size: tuple[int, int]
    canvas: tuple[int, int]
    offset: tuple[int, int] = (0, 0)
    fill: str = "black"
    method: str = ""
    tile: int = 0
    focal_point: Optional[tuple[float, float]] = None  # in source pixels
    scaled_size: Optional[tuple[int, int]] = None  # A1111's intermediate image size
    scaled_box: Optional[tuple[int, int, int, int]] = None  # the crop on that scaled image

    def as_dict(self) -> dict:
        """JSON-friendly description (boxes rounded to 1/100 px)."""
        data = {k: v for k, v in asdict(self).items() if v is not None}
        data["box"] = [round(v, 2) for v in self.box]
        if self.focal_point is not None:
            data["focal_point"] = [round(v, 2) for v in self.focal_point]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


@dataclass
class CropSettings:
    """All Auto Crop options (defaults = A1111's)."""

    method: str = "focal"
    width: int = 512
    height: int = 512
    weights: FocalWeights = field(default_factory=FocalWeights)
    split_threshold: float = 0.5
    split_overlap: float = 0.2
    auto_min_dim: int = 384
    auto_max_dim: int = 768
    auto_min_area: int = 64 * 64
    auto_max_area: int = 640 * 640
    auto_objective: str = "maximize_area"
    auto_error_threshold: float = 0.1
    a1111_compat: bool = False
    debug: bool = False


# --------------------------------------------------------------------------- plans
def _full_box(width: int, height: int) -> tuple[float, float, float, float]:
    return (0.0, 0.0, float(width), float(height))


def stretch_plan(width: int, height: int, target_w: int, target_h: int) -> CropPlan:
    """Resize the whole image to the target, ignoring aspect (A1111 resize mode 0)."""
    return CropPlan(_full_box(width, height), (target_w, target_h), (target_w, target_h), method="stretch")


def center_plan(width: int, height: int, target_w: int, target_h: int) -> CropPlan:
    """Crop-and-resize (A1111 mode 1): scale to cover the target, keep the centred box."""
    scale = max(target_w / width, target_h / height)
    box_w, box_h = target_w / scale, target_h / scale
    x0, y0 = (width - box_w) / 2, (height - box_h) / 2
    return CropPlan((x0, y0, x0 + box_w, y0 + box_h), (target_w, target_h), (target_w, target_h), method="center")


def fill_plan(width: int, height: int, target_w: int, target_h: int) -> CropPlan:
    """Resize-and-fill (A1111 mode 2): fit inside, centre, replicate the outer rows/columns."""
    scale = min(target_w / width, target_h / height)
    region = (min(target_w, max(1, round(width * scale))), min(target_h, max(1, round(height * scale))))
    offset = ((target_w - region[0]) // 2, (target_h - region[1]) // 2)
    return CropPlan(_full_box(width, height), region, (target_w, target_h), offset, fill="edge", method="fill")


def a1111_focal_scale(width: int, height: int, target_w: int, target_h: int) -> float:
    """A1111's scale rule: match the image's short side to the target's side on that axis.

    Not max(W/w, H/h): when the target is more extreme than the image, the crop leaves the
    image and PIL pads black bars."""
    if width > height:
        return target_h / height
    if width < height:
        return target_w / width
    return target_w / width if target_w >= target_h else target_h / height


def place_crop(point: tuple[int, int], scaled: tuple[int, int], target: tuple[int, int]
               ) -> tuple[int, int, int, int]:
    """Crop box of the target size centred on `point`, pushed back inside the scaled image."""
    (fx, fy), (width, height), (target_w, target_h) = point, scaled, target
    x1 = fx - int(target_w / 2)
    if x1 < 0:
        x1 = 0
    elif x1 + target_w > width:
        x1 = width - target_w
    y1 = fy - int(target_h / 2)
    if y1 < 0:
        y1 = 0
    elif y1 + target_h > height:
        y1 = height - target_h
    return (x1, y1, x1 + target_w, y1 + target_h)


def plan_from_scaled_box(width: int, height: int, scaled: tuple[int, int], scaled_box: tuple[int, int, int, int],
                         method: str, focal_point: Optional[tuple[float, float]] = None) -> CropPlan:
    """Express a crop on a rescaled copy as a region of the source (clipping any black bars)."""
    sx, sy = width / scaled[0], height / scaled[1]
    x1, y1, x2, y2 = scaled_box
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, scaled[0]), min(y2, scaled[1])
    return CropPlan(
        box=(cx1 * sx, cy1 * sy, cx2 * sx, cy2 * sy), region_size=(cx2 - cx1, cy2 - cy1),
        canvas=(x2 - x1, y2 - y1), offset=(cx1 - x1, cy1 - y1), fill="black", method=method,
        focal_point=None if focal_point is None else (focal_point[0] * sx, focal_point[1] * sy),
        scaled_size=scaled, scaled_box=scaled_box)


def focal_plan(image: Image.Image, settings: CropSettings, face_detector: Optional[FaceDetector] = None
               ) -> tuple[CropPlan, FocalResult, Image.Image]:
    """Focal-point crop: returns the plan, the detection result and the analysed (scaled) image."""
    width, height = image.size
    target = (settings.width, settings.height)
    if settings.a1111_compat:
        scale = a1111_focal_scale(width, height, *target)
        scaled = (int(width * scale), int(height * scale))
    else:
        # Cover scale: the crop always lies inside the image, so there are no black bars.
        scale = max(target[0] / width, target[1] / height)
        scaled = (max(target[0], round(width * scale)), max(target[1], round(height * scale)))
    # A1111 resizes with PIL's default (bicubic, no reducing gap); the gap is a faster approximation.
    working = image.convert("RGB").resize(scaled, Image.Resampling.BICUBIC,
                                          reducing_gap=None if settings.a1111_compat else 2.0)
    result = find_focal_point(working, target, settings.weights, face_detector, settings.a1111_compat)
    scaled_box = place_crop(result.point, scaled, target)
    plan = plan_from_scaled_box(width, height, scaled, scaled_box, "focal", result.point)
    return plan, result, working


def split_ratio(width: int, height: int, target_w: int, target_h: int) -> tuple[float, bool]:
    """(ratio, along_x): how much more elongated the image is than the target (<1 = more).

    Portrait images are measured along y; landscape and square ones along x."""
    if height > width:
        return (width * target_h) / (height * target_w), False
    return (height * target_w) / (width * target_h), True


def split_plans(width: int, height: int, target_w: int, target_h: int, threshold: float = 0.5,
                overlap: float = 0.2) -> Optional[list[CropPlan]]:
    """Tiles of an oversized image (A1111 split), or None when the image is not elongated enough.

    The short side is resized to the target; n = ceil((L - T*o) / (T*(1-o))) tiles start at
    int(i * (L - T) / (n - 1)). n <= 1 (where A1111 divides by zero) gives one centre crop."""
    threshold = min(max(threshold, 0.0), 1.0)
    overlap = min(max(overlap, 0.0), 0.9)
    ratio, along_x = split_ratio(width, height, target_w, target_h)
    if not (ratio < 1 and ratio <= threshold):
        return None
    # Work in (short, long) terms: `short` is resized to `short_target`, tiles run along `long`.
    short, long_ = (height, width) if along_x else (width, height)
    short_target, long_target = (target_h, target_w) if along_x else (target_w, target_h)
    resized_long = long_ * short_target // short
    count = math.ceil((resized_long - long_target * overlap) / (long_target * (1.0 - overlap)))
    if count <= 1:
        return [center_plan(width, height, target_w, target_h)]
    step = (resized_long - long_target) / (count - 1)
    to_source = long_ / resized_long
    plans = []
    for index in range(count):
        start = int(step * index)
        a, b = start * to_source, (start + long_target) * to_source
        box = (a, 0.0, b, float(height)) if along_x else (0.0, a, float(width), b)
        plans.append(CropPlan(box, (target_w, target_h), (target_w, target_h), method="split", tile=index,
                              scaled_size=(resized_long, short_target) if along_x else (short_target, resized_long),
                              scaled_box=(start, 0, start + long_target, short_target) if along_x
                              else (0, start, short_target, start + long_target)))
    return plans


def auto_size_candidates(min_dim: int, max_dim: int, a1111_compat: bool = False) -> list[int]:
    """Side lengths tried by auto-sized crop.

    A1111 steps by 64 from min_dim (multiples of 64 only if min_dim is one); by default we
    snap to multiples of 64 so every size is a valid latent bucket."""
    if a1111_compat:
        return list(range(min_dim, max_dim + 1, 64))
    first = max(64, math.ceil(min_dim / 64) * 64)
    return list(range(first, max_dim + 1, 64))


def choose_auto_size(width: int, height: int, settings: CropSettings) -> Optional[tuple[int, int]]:
    """The (w, h) auto-sized crop picks for an image, or None when no candidate is close enough."""
    if settings.auto_objective not in AUTO_SIZE_OBJECTIVES:
        raise ValueError(f"auto-size objective {settings.auto_objective!r}: choose one of {AUTO_SIZE_OBJECTIVES}")
    sides = auto_size_candidates(settings.auto_min_dim, settings.auto_max_dim, settings.a1111_compat)
    best_key, best = None, None
    for w in sides:
        for h in sides:
            area = w * h
            if not settings.auto_min_area <= area <= settings.auto_max_area:
                continue
            ratio = (width / height) / (w / h)
            error = 1.0 - min(ratio, 1.0 / ratio)
            if error > settings.auto_error_threshold:
                continue
            key = (area, -error) if settings.auto_objective == "maximize_area" else (-error, area)
            if best_key is None or key > best_key:
                best_key, best = key, (w, h)
    return best


def auto_sized_plan(width: int, height: int, settings: CropSettings) -> Optional[CropPlan]:
    """Largest centred box with the chosen size's aspect, resized to that size (sub-pixel box)."""
    size = choose_auto_size(width, height, settings)
    if size is None:
        return None
    aspect = size[0] / size[1]
    if width / height > aspect:
        box_w, box_h = height * aspect, float(height)
    else:
        box_w, box_h = float(width), width / aspect
    x0, y0 = (width - box_w) / 2, (height - box_h) / 2
    return CropPlan((x0, y0, x0 + box_w, y0 + box_h), size, size, method="auto_sized")


# --------------------------------------------------------------------------- rendering
def render_plan(image: Image.Image, plan: CropPlan, pad_value: float = 0.0) -> Image.Image:
    """Apply a plan to an RGB or "F" (mask) image; `pad_value` fills black-bar areas."""
    part = image.resize(plan.region_size, Image.Resampling.LANCZOS, box=plan.box)
    if plan.region_size == plan.canvas and plan.offset == (0, 0):
        return part
    array = np.asarray(part)
    left, top = plan.offset
    right = plan.canvas[0] - left - plan.region_size[0]
    bottom = plan.canvas[1] - top - plan.region_size[1]
    widths = [(top, bottom), (left, right)] + ([(0, 0)] if array.ndim == 3 else [])
    if plan.fill == "edge":
        padded = np.pad(array, widths, mode="edge")
    else:
        padded = np.pad(array, widths, mode="constant",
                        constant_values=pad_value if image.mode == "F" else round(pad_value * 255))
    return Image.fromarray(padded, image.mode)


def draw_boxes_debug(image: Image.Image, plans: list[CropPlan], max_side: int = 1024) -> Image.Image:
    """The source (downscaled to `max_side`) with every planned box outlined."""
    from PIL import ImageDraw

    scale = min(1.0, max_side / max(image.size))
    canvas = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(canvas)
    for plan in plans:
        draw.rectangle(tuple(v * scale for v in plan.box), outline="#00ff00", width=2)
        draw.text((plan.box[0] * scale + 4, plan.box[1] * scale + 2), f"{plan.method} {plan.tile}", fill="#00ff00")
    return canvas


# --------------------------------------------------------------------------- whole dataset
def plans_for_image(image: Image.Image, settings: CropSettings, face_detector: Optional[FaceDetector]
                    ) -> tuple[list[CropPlan], Optional[Image.Image]]:
    """The plans for one image and, if settings.debug, its debug picture."""
    width, height = image.size
    target_w, target_h = settings.width, settings.height
    if settings.method == "focal":
        plan, result, working = focal_plan(image, settings, face_detector)
        if not settings.debug:
            return [plan], None
        assert plan.scaled_box is not None  # focal_plan builds every plan from its box on the scaled image
        return [plan], draw_focal_debug(working, result, plan.scaled_box)
    if settings.method == "split":
        # Images that are not elongated enough get a centre crop to the same size.
        plans = split_plans(width, height, target_w, target_h, settings.split_threshold, settings.split_overlap) \
            or [center_plan(width, height, target_w, target_h)]
    elif settings.method == "auto_sized":
        sized = auto_sized_plan(width, height, settings)
        plans = [sized] if sized is not None else []
    elif settings.method == "center":
        plans = [center_plan(width, height, target_w, target_h)]
    elif settings.method == "fill":
        plans = [fill_plan(width, height, target_w, target_h)]
    elif settings.method == "stretch":
        plans = [stretch_plan(width, height, target_w, target_h)]
    else:
        raise ValueError(f"crop method {settings.method!r}: choose one of {', '.join(CROP_METHODS)}")
    return plans, (draw_boxes_debug(image, plans) if settings.debug and plans else None)


@dataclass
class CroppedPicture:
    """What one source picture became: its size, plans, rendered crops (image, mask) and debug."""

    size: tuple[int, int]
    plans: list[CropPlan]
    crops: list[tuple[Image.Image, Optional[Image.Image]]]
    debug: Optional[Image.Image]


def crop_picture(image: Image.Image, mask: Callable[[], Optional[Image.Image]], settings: CropSettings,
                 face_detector: Optional[FaceDetector] = None) -> CroppedPicture:
    """Plan and render one picture's crops. `mask()` gives its mask, asked only when there is a
    crop to render it for (a skipped picture's mask is never converted). Thread-safe."""
    plans, debug = plans_for_image(image, settings, face_detector)
    source_mask = mask() if plans else None
    crops = [(render_plan(image, plan), None if source_mask is None else render_plan(source_mask, plan, pad_value=1.0))
             for plan in plans]
    return CroppedPicture(image.size, plans, crops, debug)


def crop_dataset(images: Sequence[Image.Image], masks: Sequence[Optional[Image.Image]], captions: list[str],
                 stems: list[str], settings: CropSettings, face_detector: Optional[FaceDetector] = None,
                 on_progress: Optional[Callable[[int], None]] = None, workers: Optional[int] = None) -> DatasetLists:
    """Crop every image; captions, stems and masks follow each crop and tile.

    Masks are "F" images in ComfyUI's convention (1 = transparent); black-bar padding counts
    as transparent so a trainer weighting by alpha ignores it. The pictures are cropped by
    `workers` threads (None: HYPERNET_STUDIO_WORKERS, see workers.py), each reading its
    picture and mask from the sequences (which may convert on access); the output is in input
    order and the same as with one worker. `on_progress(n)` runs in the caller's thread."""
    output = DatasetLists()

    def crop_one(index: int) -> CroppedPicture:
        return crop_picture(images[index], lambda: masks[index], settings, face_detector)

    with closing(imap_in_workers(crop_one, range(len(images)), workers)) as pictures:
        for index, picture in enumerate(pictures):
            _add_cropped(output, picture, index, captions, stems, settings)
            if on_progress is not None:
                on_progress(index + 1)
    return output


def _add_cropped(output: DatasetLists, picture: CroppedPicture, index: int, captions: list[str], stems: list[str],
                 settings: CropSettings) -> None:
    """Append one picture's crops, boxes, debug picture or skip warning to `output`."""
    if not picture.plans:
        width, height = picture.size
        output.warnings.append(f"skipped {stems[index]} ({width}x{height}): no auto-sized crop fits "
                               f"within error threshold {settings.auto_error_threshold}")
    for plan, (image, mask) in zip(picture.plans, picture.crops):
        output.add(image, mask, captions[index],
                   stems[index] if len(picture.plans) == 1 else f"{stems[index]}-{plan.tile}")
        output.boxes.append({"source": index, "stem": stems[index], **plan.as_dict()})
    if picture.debug is not None:
        output.debug_images.append(picture.debug)
