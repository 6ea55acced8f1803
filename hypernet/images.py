"""Conversions between ComfyUI's IMAGE/MASK tensors, numpy arrays and Pillow images, and the
one PNG writer for IMAGE items. Every module that turns a tensor into a picture uses these.

ComfyUI's convention is kept everywhere: an IMAGE item is float32 [1,H,W,3] in 0..1 (RGB),
a MASK item is float32 [1,H,W] with 1 = transparent (what core LoadImage gives). The
trainer's per-pixel loss weight is `1 - mask` (= alpha)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from PIL import Image

from .files import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def array_to_image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """float or uint8 [H,W,3] array -> IMAGE item [1,H,W,3] float32 0..1."""
    if rgb.dtype == np.uint8:
        rgb = rgb.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).unsqueeze(0)


def pil_to_image_tensor(image: Image.Image) -> torch.Tensor:
    """Pillow image (any mode, converted to RGB) -> IMAGE item [1,H,W,3]."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return array_to_image_tensor(np.asarray(image))


def image_tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """IMAGE item [1,H,W,3] or [H,W,3] -> RGB Pillow image (rounded to 8 bits)."""
    array = _single(image, 3, "IMAGE").detach().float().cpu().numpy()
    # One float buffer reused in place: three times faster than chained temporaries on big images.
    scaled = np.multiply(array, 255.0, dtype=np.float32)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    return Image.fromarray(scaled.astype(np.uint8), "RGB")


def mask_tensor_to_pil(mask: torch.Tensor) -> Image.Image:
    """MASK item [1,H,W] or [H,W] -> float Pillow image (mode "F"), values kept as is."""
    array = _single(mask, 2, "MASK").detach().float().cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), "F")


def pil_to_mask_tensor(mask: Image.Image) -> torch.Tensor:
    """Mode "F" (or "L", scaled by 1/255) Pillow image -> MASK item [1,H,W] clamped to 0..1."""
    array = np.asarray(mask, dtype=np.float32)
    if mask.mode == "L":
        array = array / 255.0
    return torch.from_numpy(np.clip(array, 0.0, 1.0).copy()).unsqueeze(0)


def empty_mask_for(image: torch.Tensor) -> torch.Tensor:
    """An all-opaque MASK item (zeros) sized like the IMAGE item."""
    height, width = _single(image, 3, "IMAGE").shape[:2]
    return torch.zeros((1, height, width), dtype=torch.float32)


def _single(tensor: torch.Tensor, rank_without_batch: int, kind: str) -> torch.Tensor:
    """Drop a leading batch dimension of size 1, refusing real batches with a clear error."""
    if tensor.dim() == rank_without_batch + 1:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected one {kind} per list item, got a batch of {tensor.shape[0]}; "
                             "split the batch into a list first (e.g. ComfyUI's 'Image Batch to Image List')")
        tensor = tensor[0]
    if tensor.dim() != rank_without_batch:
        raise ValueError(f"{kind} item has shape {tuple(tensor.shape)}")
    return tensor


def split_image_batches(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """IMAGE list whose items may be batches [B,H,W,3] -> list of single items [1,H,W,3]."""
    items: list[torch.Tensor] = []
    for tensor in images:
        tensor = tensor if tensor.dim() == 4 else tensor.unsqueeze(0)
        items.extend(tensor[i:i + 1] for i in range(tensor.shape[0]))
    return items


def split_mask_batches(masks: list[Optional[torch.Tensor]]) -> list[Optional[torch.Tensor]]:
    """MASK list whose items may be batches [B,H,W] -> list of single items [1,H,W] (None kept)."""
    items: list[Optional[torch.Tensor]] = []
    for tensor in masks:
        if tensor is None:
            items.append(None)
            continue
        tensor = tensor if tensor.dim() == 3 else tensor.unsqueeze(0)
        items.extend(tensor[i:i + 1] for i in range(tensor.shape[0]))
    return items


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Write IMAGE item [1,H,W,3] as an RGB PNG, atomically."""
    picture = image_tensor_to_pil(image)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def agg_figure(width: int, height: int) -> Figure:
    """A matplotlib Figure of `width` x `height` pixels on the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def figure_image(figure: Figure) -> torch.Tensor:
    """An Agg figure (agg_figure) drawn as a float IMAGE [1,H,W,3] in 0..1 (ComfyUI's picture type)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        raise TypeError("figure_image draws figures made on the Agg canvas (agg_figure)")
    canvas.draw()
    return array_to_image_tensor(np.asarray(canvas.buffer_rgba())[..., :3])
