"""Training data: bucketed images, cached latents and text conditionings, batch order.

Everything expensive happens once: images are resized to their bucket and encoded by the
VAE once (per latent sampling mode), and each distinct prompt is encoded by CLIP once.
Per step only cached tensors are gathered, unless tag shuffle/dropout makes a new prompt.
Every random choice is a pure function of (seed, purpose, index), see rng.py."""
from __future__ import annotations

import logging
import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .rng import derive_seed, generator

logger = logging.getLogger(__name__)

LATENT_SAMPLING_MODES = ("once", "deterministic", "random")


@dataclass
class TrainingExample:
    """One image at its bucket size: pixels [1,H,W,3] 0..1, its caption, and the loss weight
    from its alpha channel at pixel size [1,H,W] (None = uniform)."""

    pixels: torch.Tensor
    caption: str
    alpha: Optional[torch.Tensor] = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[1])


def bucket_size(width: int, height: int, resolution: int, multiple: int = 64) -> tuple[int, int]:
    """The bucket for a `width`x`height` image: about resolution² pixels, the image's aspect
    ratio, both sides multiples of `multiple` (at least one multiple)."""
    aspect = width / height
    target_w = math.sqrt(resolution * resolution * aspect)
    bucket_w = max(multiple, int(round(target_w / multiple)) * multiple)
    bucket_h = max(multiple, int(round(resolution * resolution / bucket_w / multiple)) * multiple)
    return bucket_w, bucket_h


def _to_pil(image: torch.Tensor) -> Image.Image:
    array = (image[0, :, :, :3].detach().float().cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, "RGB")


def _from_pil(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).reshape(1, image.height, image.width, -1)


def prepare_examples(images: Sequence[torch.Tensor], captions: Sequence[str],
                     masks: Optional[Sequence[Optional[torch.Tensor]]] = None, resolution: int = 512,
                     aspect_buckets: bool = True, multiple: int = 64) -> list[TrainingExample]:
    """Resize every image (BICUBIC) to its training size.

    With aspect buckets each image is scaled to cover its bucket and centre-cropped; without,
    it is stretched to resolution x resolution as A1111 does. `masks` are ComfyUI MASKs
    (1 = transparent); their inverse is kept as the alpha used for loss weights."""
    if not images:
        raise ValueError("images: the dataset is empty")
    if len(captions) != len(images):
        raise ValueError(f"captions: got {len(captions)} captions for {len(images)} images "
                         "(one caption per image, from the dataset nodes)")
    if masks is not None and len(masks) not in (0, len(images)):
        raise ValueError(f"masks: got {len(masks)} masks for {len(images)} images")
    if resolution % multiple:
        raise ValueError(f"resolution must be a multiple of {multiple}, got {resolution}")
    examples = []
    for index, image in enumerate(images):
        if image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] < 3:
            raise ValueError(f"images[{index}]: expected one image [1,H,W,3], got {tuple(image.shape)}")
        height, width = int(image.shape[1]), int(image.shape[2])
        size = bucket_size(width, height, resolution, multiple) if aspect_buckets else (resolution, resolution)
        resize = ((lambda pil, mode: ImageOps.fit(pil, size, mode)) if aspect_buckets
                  else (lambda pil, mode: pil.resize(size, mode)))
        pixels = _from_pil(resize(_to_pil(image), Image.Resampling.BICUBIC))
        alpha = None
        mask = masks[index] if masks else None
        if mask is not None:
            mask = mask.reshape(-1, *mask.shape[-2:])[0].detach().float().cpu()
            if tuple(mask.shape) != (height, width):
                raise ValueError(f"masks[{index}]: size {tuple(mask.shape)} differs from its image {(height, width)}")
            alpha_image = Image.fromarray(((1.0 - mask.clamp(0, 1)).numpy() * 255).round().astype(np.uint8), "L")
            alpha = _from_pil(resize(alpha_image, Image.Resampling.BILINEAR))[..., 0]
        examples.append(TrainingExample(pixels, str(captions[index]), alpha))
    return examples


def alpha_loss_weight(alpha: Optional[torch.Tensor], latent_hw: tuple[int, int]) -> Optional[torch.Tensor]:
    """A1111's PNG-alpha loss weight at latent size [1,h,w]: w = a - min(a), then w / mean(w).

    A uniform alpha (where A1111 would divide by zero) gives uniform weight (None)."""
    if alpha is None:
        return None
    weight = F.interpolate(alpha[None].float(), size=latent_hw, mode="area")[0]
    weight = weight - weight.min()
    mean = weight.mean()
    if float(mean) <= 1e-8:
        return None
    return weight / mean


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
            batches = []
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


class LatentCache:
    """Scaled latents per example, encoded once.

    `once`: one sample drawn at build time and reused; `deterministic`: the distribution's
    mean; `random`: mean + std * fresh noise for every use. Backends that only give the mean
    (std None) make all three modes the mean."""

    def __init__(self, examples: Sequence[TrainingExample], encode: Callable, mode: str, seed: int,
                 device: torch.device, use_alpha_weight: bool = False, chunk: int = 4):
        if mode not in LATENT_SAMPLING_MODES:
            raise ValueError(f"latent sampling must be one of {', '.join(LATENT_SAMPLING_MODES)}, got {mode!r}")
        self.mode, self.seed, self.device = mode, seed, device
        self.means: list[torch.Tensor] = [None] * len(examples)
        self.stds: list[Optional[torch.Tensor]] = [None] * len(examples)
        by_size: "OrderedDict[tuple[int, int], list[int]]" = OrderedDict()
        for index, example in enumerate(examples):
            by_size.setdefault(example.size, []).append(index)
        for indices in by_size.values():
            for start in range(0, len(indices), chunk):
                part = indices[start:start + chunk]
                mean, std = encode(torch.cat([examples[i].pixels for i in part]))
                for row, index in enumerate(part):
                    self.means[index] = mean[row:row + 1].to(device, torch.float32)
                    self.stds[index] = None if std is None else std[row:row + 1].to(device, torch.float32)
        if mode != "deterministic" and any(std is None for std in self.stds):
            logger.warning("latent sampling %r: this VAE's encode gives only the latent mean (ComfyUI's does), "
                           "so every image trains on its mean, as 'deterministic'", mode)
        if mode == "once":
            self.means = [self._sample(index, "once") for index in range(len(examples))]
            self.stds = [None] * len(examples)
        elif mode == "deterministic":
            self.stds = [None] * len(examples)
        self.weights = [alpha_loss_weight(example.alpha, tuple(self.means[i].shape[-2:])) if use_alpha_weight
                        else None for i, example in enumerate(examples)]
        self.weights = [None if w is None else w.to(device) for w in self.weights]

    def _sample(self, index: int, *when: object) -> torch.Tensor:
        mean, std = self.means[index], self.stds[index]
        if std is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator(self.seed, "latent", index, *when))
        return mean + std * noise.to(mean.device)

    def latents(self, indices: Sequence[int], micro_batch: int) -> torch.Tensor:
        """Latents [B,C,h,w] for `indices` at global micro-batch `micro_batch`."""
        return torch.cat([self._sample(i, micro_batch) for i in indices])

    def loss_weights(self, indices: Sequence[int]) -> Optional[torch.Tensor]:
        """[B,1,h,w] weights, or None when no example in the batch has one."""
        if all(self.weights[i] is None for i in indices):
            return None
        shape = self.means[indices[0]].shape[-2:]
        return torch.stack([self.weights[i] if self.weights[i] is not None
                            else torch.ones(1, *shape, device=self.device) for i in indices])


class TextCache:
    """Text conditionings [T,D] per distinct prompt, encoded in batches, LRU-bounded."""

    def __init__(self, encode_texts: Callable[[list[str]], torch.Tensor], device: torch.device,
                 capacity: int = 4096):
        self.encode_texts, self.device, self.capacity = encode_texts, device, capacity
        self.entries: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self.encoded = 0

    def warm(self, prompts: Sequence[str]) -> None:
        """Encode every prompt not cached yet, in one call."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self.entries]
        if missing:
            with torch.no_grad():  # per-step prompts (shuffle/dropout) must not record CLIP for backward
                conds = self.encode_texts(missing)
            self.encoded += len(missing)
            for prompt, cond in zip(missing, conds):
                self.entries[prompt] = cond.detach().to(self.device, torch.float32)
        for prompt in prompts:
            self.entries.move_to_end(prompt)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def batch(self, prompts: Sequence[str]) -> torch.Tensor:
        """Stacked conditionings [B,T,D] for `prompts`; shorter ones (a prompt over 75 tokens
        encodes to several 77-token chunks) are padded by repeating their last vector, as A1111 does."""
        self.warm(prompts)
        conds = [self.entries[p] for p in prompts]
        length = max(c.shape[0] for c in conds)
        return torch.stack([c if c.shape[0] == length else torch.cat([c, c[-1:].expand(length - c.shape[0], -1)])
                            for c in conds])
