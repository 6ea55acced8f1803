"""The training set: every image at its bucket size with its caption and alpha, and the order
in which batches are drawn (A1111's grouped batches). Every random choice is a pure function
of (seed, purpose, index), see random_draws.py.

An example either holds its pixels (the IMAGE lists of the dataset nodes) or reads them from a
PictureSource each time they are asked for (a folder's picture file, picture_files.py): then only
its bucket size, known from the file's header, lives in memory until its latent is encoded."""
from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import InputError
from ..images import image_tensor_to_pil, pil_to_image_tensor, pil_to_mask_tensor
from .random_draws import derive_seed


class PictureSource(Protocol):
    """Where a TrainingExample's pixels come from when it does not hold them (a picture file)."""

    size: tuple[int, int]  # (width, height) of the training pixels, known before any decoding

    def training_pixels(self) -> torch.Tensor:
        """The pixels [1,H,W,3] 0..1 at `size`, decoded now."""
        ...

    def training_alpha(self) -> Optional[torch.Tensor]:
        """The alpha [1,H,W] at `size` (None for a picture without one), decoded now."""
        ...


@dataclass
class TrainingExample:
    """One image at its bucket size: pixels [1,H,W,3] 0..1, its caption, and the loss weight
    from its alpha channel at pixel size [1,H,W] (None = uniform). An example made from a
    `source` holds no pixels: they are decoded from it whenever they are asked for.

    `cache_identity` names what the training pixels are made from, for a persistent latent cache:
    set for a folder's picture (its file and every setting that changes its pixels), None for
    pixels handed in from memory (a cache must hash those)."""

    pixels: Optional[torch.Tensor]
    caption: str
    alpha: Optional[torch.Tensor] = None
    size: tuple[int, int] = field(init=False)  # (width, height) in pixels
    source: Optional[PictureSource] = None
    cache_identity: Optional[str] = None
    released: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.pixels is not None:
            self.size = (int(self.pixels.shape[2]), int(self.pixels.shape[1]))
        elif self.source is not None:
            self.size = self.source.size
        else:
            raise ValueError("a TrainingExample is made with its pixels or a source of them (only release_pixels() "
                             "drops them)")

    def pixels_to_encode(self) -> torch.Tensor:
        """The pixels for the VAE (decoded now from a source); they exist until release_pixels()."""
        if self.released:
            raise RuntimeError(f"the pixels of the image captioned {self.caption!r} were released after encoding")
        if self.pixels is not None:
            return self.pixels
        assert self.source is not None  # __post_init__ refuses an example with neither
        return self.source.training_pixels()

    def training_alpha(self) -> Optional[torch.Tensor]:
        """The alpha for the loss weight (decoded now from a source); it exists until release_pixels()."""
        if self.released:
            raise RuntimeError(f"the alpha of the image captioned {self.caption!r} was released after encoding")
        if self.source is not None and self.pixels is None:
            return self.source.training_alpha()
        return self.alpha

    def release_pixels(self) -> None:
        """Drop the pixels once they are encoded: a run holds latents, not pictures."""
        self.pixels, self.alpha, self.released = None, None, True


def bucket_size(width: int, height: int, resolution: int, multiple: int = 64) -> tuple[int, int]:
    """The bucket for a `width`x`height` image: about resolution² pixels, the image's aspect
    ratio, both sides multiples of `multiple` (at least one multiple)."""
    aspect = width / height
    target_w = math.sqrt(resolution * resolution * aspect)
    bucket_w = max(multiple, int(round(target_w / multiple)) * multiple)
    bucket_h = max(multiple, int(round(resolution * resolution / bucket_w / multiple)) * multiple)
    return bucket_w, bucket_h


def prepare_examples(images: Sequence[torch.Tensor], captions: Sequence[str],
                     masks: Optional[Sequence[Optional[torch.Tensor]]] = None, resolution: int = 512,
                     aspect_buckets: bool = True, multiple: int = 64) -> list[TrainingExample]:
    """Resize every image (BICUBIC) to its training size.

    With aspect buckets each image is scaled to cover its bucket and centre-cropped; without,
    it is stretched to resolution x resolution as A1111 does. `masks` are ComfyUI MASKs
    (1 = transparent); their inverse is kept as the alpha used for loss weights."""
    if not images:
        raise InputError("images", "the dataset is empty")
    if len(captions) != len(images):
        raise InputError("captions", f"got {len(captions)} captions for {len(images)} images "
                                     "(one caption per image, from the dataset nodes)")
    if masks is not None and len(masks) not in (0, len(images)):
        raise InputError("masks", f"got {len(masks)} masks for {len(images)} images")
    check_resolution(resolution, multiple)
    examples = []
    for index, image in enumerate(images):
        if image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] < 3:
            raise InputError("images", f"item {index}: expected one image [1,H,W,3], got {tuple(image.shape)}")
        height, width = int(image.shape[1]), int(image.shape[2])
        size = bucket_size(width, height, resolution, multiple) if aspect_buckets else (resolution, resolution)
        mask = masks[index] if masks else None
        if mask is not None:
            mask = mask.reshape(-1, *mask.shape[-2:])[0].detach().float().cpu()
            if tuple(mask.shape) != (height, width):
                raise InputError("masks", f"item {index}: size {tuple(mask.shape)} differs from its image "
                                          f"{(height, width)}")
        pixels, alpha = sized_for_training(image, mask, size, aspect_buckets)
        examples.append(TrainingExample(pixels, str(captions[index]), alpha))
    return examples


def check_resolution(resolution: int, multiple: int = 64) -> None:
    """The training resolution is a whole number of buckets' steps (InputError for 'resolution')."""
    if resolution % multiple:
        raise InputError("resolution", f"must be a multiple of {multiple}, got {resolution}")


def sized_for_training(image: torch.Tensor, mask: Optional[torch.Tensor], size: tuple[int, int],
                       cover: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One picture's training pixels [1,H,W,3] at `size` (BICUBIC) and its alpha [1,H,W] (BILINEAR)
    from a ComfyUI MASK [H,W] (1 = transparent; None = no alpha): scaled to cover `size` and
    centre-cropped, or stretched to it (`cover` False, as A1111). The in-memory and the folder
    paths both size their pictures here, so both train on the same pixels."""
    pixels = pil_to_image_tensor(_resized(image_tensor_to_pil(image[..., :3]), size, cover, Image.Resampling.BICUBIC))
    alpha = None if mask is None else pil_to_mask_tensor(_resized(_alpha_image(mask), size, cover,
                                                                  Image.Resampling.BILINEAR))
    return pixels, alpha


def _resized(picture: Image.Image, size: tuple[int, int], cover: bool, mode: Image.Resampling) -> Image.Image:
    """Scaled to cover `size` and centre-cropped (aspect buckets), or stretched to it (A1111)."""
    return ImageOps.fit(picture, size, mode) if cover else picture.resize(size, mode)


def _alpha_image(mask: torch.Tensor) -> Image.Image:
    """A ComfyUI MASK (1 = transparent) as an 8-bit alpha picture."""
    return Image.fromarray(((1.0 - mask.clamp(0, 1)).numpy() * 255).round().astype(np.uint8), "L")


class BatchPlan:
    """A1111's grouped batch order: per epoch, each size group is shuffled and cut into full
    batches; the remaining batches (to make N // batch_size) are drawn with replacement from a
    group picked with probability proportional to its leftover images; all shuffled.
    Micro-batch m belongs to epoch m // batches_per_epoch (a partial accumulation at the end
    of an epoch is dropped, as A1111 does)."""

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int, accumulation: int, seed: int):
        self.count = count = len(sizes)
        self.batch_size = max(1, min(int(batch_size), count))
        self.accumulation = max(1, min(int(accumulation), count // self.batch_size))
        batches = count // self.batch_size
        self.batches_per_epoch = batches - batches % self.accumulation
        self.steps_per_epoch = self.batches_per_epoch // self.accumulation
        groups: "OrderedDict[tuple[int, int], list[int]]" = OrderedDict()
        for index, size in enumerate(sizes):
            groups.setdefault(size, []).append(index)
        self.groups = list(groups.values())
        self.seed = seed
        self._cache: dict[int, list[list[int]]] = {}

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches of `epoch` (image indices), a pure function of (seed, epoch)."""
        if epoch not in self._cache:
            rng = random.Random(derive_seed(self.seed, "epoch", epoch))
            size = self.batch_size
            groups = [list(group) for group in self.groups]
            batches: list[list[int]] = []
            for group in groups:
                rng.shuffle(group)
                batches.extend(group[i * size:(i + 1) * size] for i in range(len(group) // size))
            leftovers = [len(group) % size for group in groups]
            for _ in range(self.count // size - len(batches)):
                group = rng.choices(groups, weights=leftovers)[0]
                batches.append(rng.choices(group, k=size))
            rng.shuffle(batches)
            self._cache = {epoch: batches[:self.batches_per_epoch]}
        return self._cache[epoch]

    def batch(self, micro_batch: int) -> list[int]:
        """Image indices for global micro-batch number `micro_batch`."""
        epoch, position = divmod(micro_batch, self.batches_per_epoch)
        return self.epoch_batches(epoch)[position]
