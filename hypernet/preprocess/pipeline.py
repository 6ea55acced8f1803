"""Tensor-level entry points for the dataset nodes: IMAGE/MASK lists in, IMAGE/MASK lists out.

They convert to Pillow once per image, call the pure geometry/detection code and convert
back, so nodes stay thin and never touch Pillow themselves."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union, overload

import torch
from PIL import Image

from ..errors import InputError
from ..images import (
    array_to_image_tensor,
    empty_mask_for,
    image_tensor_to_pil,
    mask_tensor_to_pil,
    pil_to_image_tensor,
    pil_to_mask_tensor,
    split_image_batches,
    split_mask_batches,
)
from .crop import CropSettings, crop_dataset
from .faces import FaceDetector
from .focal import FocalWeights
from .image_folder import load_image_folder
from .lists import DatasetLists

_Source = TypeVar("_Source")
_Converted = TypeVar("_Converted")


def load_folder_lists(folder: Path, **options: Any) -> DatasetLists:
    """`load_image_folder` as IMAGE/MASK lists; masks are 1 - alpha (zeros when opaque)."""
    result = load_image_folder(folder, **options)
    lists = DatasetLists(folder=result.folder, warnings=result.warnings, chunk=result.chunk)
    for item in result.images:
        image = array_to_image_tensor(item.rgb)
        mask = empty_mask_for(image) if item.alpha is None else torch.from_numpy(1.0 - item.alpha).unsqueeze(0)
        lists.images += [image] * item.repeats
        lists.masks += [mask] * item.repeats
        lists.captions += [item.caption] * item.repeats
        lists.stems += [item.stem] * item.repeats
    return lists


def crop_settings_from(options: dict[str, Any]) -> CropSettings:
    """CropSettings from the node's widget values (unknown keys are an error)."""
    values = dict(options)
    weights = FocalWeights(face=values.pop("face_weight", 0.9), entropy=values.pop("entropy_weight", 0.15),
                           edges=values.pop("edges_weight", 0.5))
    values.pop("face_detector", None)
    return CropSettings(weights=weights, **values)


def auto_crop_tensors(images: list[torch.Tensor], masks: list[Optional[torch.Tensor]], captions: list[str],
                      stems: list[str], options: dict[str, Any], yunet_path: Optional[Path] = None,
                      on_progress: Optional[Callable[[int], None]] = None) -> DatasetLists:
    """Auto Crop over IMAGE items; `options` are the node's widgets (method, width, weights...).

    Raises InputError for 'images' when every image was skipped (auto_sized with no fitting size)."""
    settings = crop_settings_from(options)
    detector = None
    if settings.method == "focal" and settings.weights.face > 0:
        detector = FaceDetector(options.get("face_detector", "auto"), yunet_path, settings.a1111_compat)
    pil_images, pil_masks = _ConvertedOnUse(images, image_tensor_to_pil), _ConvertedOnUse(masks, _mask_to_pil)
    result = crop_dataset(pil_images, pil_masks, captions, stems, settings, detector, on_progress)
    output = DatasetLists(
        images=[pil_to_image_tensor(image) for image in result.images],
        masks=[None if mask is None else pil_to_mask_tensor(mask) for mask in result.masks],
        captions=result.captions, stems=result.stems, boxes=result.boxes,
        debug_images=[pil_to_image_tensor(image) for image in result.debug_images],
        warnings=(detector.warnings if detector else []) + result.warnings)
    if not output.images:
        raise InputError("images", "no image could be cropped: " + "; ".join(result.warnings))
    return output


def _mask_to_pil(mask: Optional[torch.Tensor]) -> Optional[Image.Image]:
    """A MASK item as an "F" image; a missing mask stays None."""
    return None if mask is None else mask_tensor_to_pil(mask)


class _ConvertedOnUse(Sequence[_Converted]):
    """`items` converted one at a time as they are read, nothing kept: Auto Crop holds a Pillow
    copy of only the source pictures its workers are cropping, not one of every picture. Each
    read converts afresh (crop_dataset reads each picture and mask once), so workers may read
    at the same time."""

    def __init__(self, items: Sequence[_Source], convert: Callable[[_Source], _Converted]):
        self._items, self._convert = items, convert

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> _Converted: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[_Converted]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[_Converted, Sequence[_Converted]]:
        if isinstance(index, slice):
            raise TypeError("read one item at a time: a slice would hold several converted copies")
        return self._convert(self._items[index])  # IndexError ends iteration


def _parallel(name: str, values: Optional[list], count: int, default: Any) -> list:
    """Check a list input against the image count (one value is broadcast); None -> defaults."""
    if values is None:
        return [default] * count
    if len(values) == 1 and count != 1:
        return list(values) * count
    if len(values) != count:
        raise InputError(name, f"has {len(values)} items for {count} images")
    return list(values)


def align_dataset_inputs(images: list[torch.Tensor], captions: Optional[list[str]],
                         masks: Optional[list[Optional[torch.Tensor]]], stems: Optional[list[str]]
                         ) -> tuple[list[torch.Tensor], list[str], list[Optional[torch.Tensor]], list[str]]:
    """A dataset node's list inputs as (single IMAGE items, captions, masks or None, stems).

    IMAGE batches are split into items; a batch wired in as one list entry shares that entry's
    caption and stem; a single caption/mask/stem is broadcast; any other length mismatch is an
    InputError naming the input. Missing stems become image00000, image00001..."""
    items = split_image_batches(images)
    if not items:
        raise InputError("images", "is empty")
    batch_sizes = [image.shape[0] if image.dim() == 4 else 1 for image in images]

    def per_item(name: str, values: Optional[list], default: Any) -> list:
        if values is not None and len(values) == len(images) != len(items):
            values = [value for value, size in zip(values, batch_sizes) for _ in range(size)]
        return _parallel(name, values, len(items), default)

    default_stems = [f"image{i:05d}" for i in range(len(items))]
    return (items, per_item("captions", captions, ""),
            _parallel("masks", split_mask_batches(masks) if masks else None, len(items), None),
            per_item("stems", stems, "") if stems is not None else default_stems)


def fill_missing_masks(images: list[torch.Tensor], masks: list[Optional[torch.Tensor]]) -> list[torch.Tensor]:
    """Masks with opaque zeros where there were none, so a MASK list stays parallel to its images."""
    return [mask if mask is not None else empty_mask_for(image) for image, mask in zip(images, masks)]
