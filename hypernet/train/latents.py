"""Where images become latents and captions become conditionings, once.

Images are encoded by the VAE once (per latent sampling mode) and each distinct prompt by
CLIP once; per step only cached tensors are gathered, unless tag shuffle/dropout makes a new
prompt. Every random draw is a pure function of (seed, purpose, index), see random_draws.py."""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..sd.components import Conditioning, TextConditioning
from .batches import TrainingExample
from .config import LATENT_SAMPLING_MODES
from .random_draws import generator

logger = logging.getLogger(__name__)

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


class LatentCache:
    """Scaled latents per example, encoded once.

    `once`: one sample drawn at build time and reused; `deterministic`: the distribution's
    mean; `random`: mean + std * fresh noise for every use. Backends that only give the mean
    (std None) make all three modes the mean."""

    def __init__(self, examples: Sequence[TrainingExample], encode: Callable, mode: str, seed: int,
                 device: torch.device, use_alpha_weight: bool = False, chunk: int = 4):
        if mode not in LATENT_SAMPLING_MODES:
            raise InputError("latent_sampling", f"must be one of {', '.join(LATENT_SAMPLING_MODES)}, got {mode!r}")
        self.mode, self.seed, self.device = mode, seed, device
        self.means, self.stds = _encoded(examples, encode, device, chunk)
        if mode != "deterministic" and any(std is None for std in self.stds):
            logger.warning("latent sampling %r: this VAE's encode gives only the latent mean (ComfyUI's does), "
                           "so every image trains on its mean, as 'deterministic'", mode)
        if mode == "once":
            self.means = [self._sample(index, "once") for index in range(len(examples))]
            self.stds = [None] * len(examples)
        elif mode == "deterministic":
            self.stds = [None] * len(examples)
        self.weights = [alpha_loss_weight(example.alpha, _latent_size(self.means[i])) if use_alpha_weight
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
        weights = [self.weights[i] for i in indices]
        return torch.stack([weight if weight is not None else torch.ones(1, *shape, device=self.device)
                            for weight in weights])


def _encoded(examples: Sequence[TrainingExample], encode: Callable, device: torch.device,
             chunk: int) -> tuple[list[torch.Tensor], list[Optional[torch.Tensor]]]:
    """Every example's latent mean and std (None when the VAE gives only the mean) [1,C,h,w],
    fp32 on `device`, encoded `chunk` images of one size at a time."""
    by_size: "OrderedDict[tuple[int, int], list[int]]" = OrderedDict()
    for index, example in enumerate(examples):
        by_size.setdefault(example.size, []).append(index)
    encoded: dict[int, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
    for indices in by_size.values():
        for start in range(0, len(indices), chunk):
            part = indices[start:start + chunk]
            mean, std = encode(torch.cat([examples[i].pixels_to_encode() for i in part]))
            for row, index in enumerate(part):
                encoded[index] = (mean[row:row + 1].to(device, torch.float32),
                                  None if std is None else std[row:row + 1].to(device, torch.float32))
    return [encoded[i][0] for i in range(len(examples))], [encoded[i][1] for i in range(len(examples))]


def _latent_size(latent: torch.Tensor) -> tuple[int, int]:
    """(h, w) of a latent [..., h, w]."""
    height, width = latent.shape[-2:]
    return height, width


class TextCache:
    """Text conditionings per distinct prompt, encoded in batches, LRU-bounded: the context [T,D]
    and, for SDXL, the pooled output [1280] with it (TextConditioning)."""

    def __init__(self, encode_texts: Callable[[list[str]], Union[torch.Tensor, list, TextConditioning]],
                 device: torch.device, capacity: int = 4096):
        self.encode_texts, self.device, self.capacity = encode_texts, device, capacity
        self.entries: "OrderedDict[str, TextConditioning]" = OrderedDict()
        self.encoded = 0

    def warm(self, prompts: Sequence[str]) -> None:
        """Encode every prompt not cached yet, in one call."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self.entries]
        if missing:
            with torch.no_grad():  # per-step prompts (shuffle/dropout) must not record CLIP for backward
                conds = _per_prompt(self.encode_texts(missing))
            self.encoded += len(missing)
            for prompt, cond in zip(missing, conds):
                self.entries[prompt] = TextConditioning(
                    cond.context.detach().to(self.device, torch.float32),
                    None if cond.pooled is None else cond.pooled.detach().to(self.device, torch.float32))
        for prompt in prompts:
            self.entries.move_to_end(prompt)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def batch(self, prompts: Sequence[str]) -> Conditioning:
        """The batch's conditioning: the stacked contexts [B,T,D], or for SDXL a TextConditioning
        with the pooled outputs [B,1280] too. Shorter contexts (a prompt over 75 tokens encodes
        to several 77-token chunks) are padded by repeating their last vector, as A1111 does."""
        self.warm(prompts)
        entries = [self.entries[p] for p in prompts]
        length = max(e.context.shape[0] for e in entries)
        context = torch.stack([c if c.shape[0] == length else torch.cat([c, c[-1:].expand(length - c.shape[0], -1)])
                               for c in (e.context for e in entries)])
        pooled = [e.pooled for e in entries if e.pooled is not None]
        if not pooled:
            return context
        if len(pooled) != len(entries):  # one backend encodes every prompt alike
            raise RuntimeError("the text encoder gave a pooled output for some prompts only")
        return TextConditioning(context, torch.stack(pooled))


def _per_prompt(encoded: Union[torch.Tensor, list, TextConditioning]) -> list[TextConditioning]:
    """A backend's encoding of several prompts, one TextConditioning per prompt."""
    if isinstance(encoded, TextConditioning):
        pooled = encoded.pooled
        return [TextConditioning(encoded.context[i], None if pooled is None else pooled[i])
                for i in range(encoded.context.shape[0])]
    return [item if isinstance(item, TextConditioning) else TextConditioning(item) for item in encoded]
