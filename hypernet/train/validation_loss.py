"""Validation loss: how well the network does on images it never trains on, the readout that
shows overfitting (training loss falls while validation loss turns up).

The held-out images are either a fraction of the dataset, chosen from the seed (so the same
images every run with that seed), or a separate set. Each held-out image gets one timestep and
one noise draw, fixed for the whole run, its latent's mean and one fixed prompt, so every
evaluation measures the same thing and two evaluations of unchanged weights are identical."""
from __future__ import annotations

import contextlib
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch

from .backend import NoiseSchedule, TrainingBackend
from .batches import TrainingExample
from .host_copies import to_device
from .latents import LatentCache, TextCache
from .losses import diffusion_loss, min_snr_weights, noised_batch
from .prompts import PromptSource
from .random_draws import derive_seed, draw_sample, generator

if TYPE_CHECKING:
    from .encoding_cache import EncodingCache


def split_examples(examples: Sequence[TrainingExample], fraction: float, seed: int
                   ) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """(training, held out): round(fraction * N) images chosen from the seed, at least one when
    the fraction is above 0, and never all of them."""
    count = min(len(examples) - 1, max(1, round(fraction * len(examples)))) if fraction > 0 else 0
    if count <= 0:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(derive_seed(seed, "validation split")).shuffle(order)
    held = set(order[:count])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


@dataclass
class ValidationSettings:
    """What a validation shares with training: the loss and its options, the batch size, precision."""

    loss_type: str = "mse"
    min_snr_gamma: float = 0.0
    noise_offset: float = 0.0
    batch_size: int = 1
    use_alpha_weight: bool = False


class Validator:
    """The mean loss over the held-out images, with fixed timesteps, noise, latents and prompts."""

    def __init__(self, examples: Sequence[TrainingExample], backend: TrainingBackend, schedule: NoiseSchedule,
                 prompts: PromptSource, texts: TextCache, seed: int, settings: ValidationSettings,
                 cache: Optional["EncodingCache"] = None):
        self.backend, self.schedule, self.settings = backend, schedule, settings
        device = backend.device
        with torch.no_grad():  # only the writing process validates: no processes to share with
            self.latents = LatentCache(examples, backend.encode_images, "deterministic", seed, device,
                                       settings.use_alpha_weight, cache=cache)
        self.prompts = [prompts.prompt(i, "validation") for i in range(len(examples))]
        texts.warm_through(self.prompts, cache, writes=True)
        self.texts, self.alphas = texts, schedule.alphas_cumprod.to(device)
        self.draws = [self._fixed_draw(i, seed) for i in range(len(examples))]
        self.batches = _batches_by_size([e.size for e in examples], max(1, settings.batch_size))

    def _fixed_draw(self, index: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return draw_sample(generator(seed, "validation", index), self.schedule.num_train_timesteps,
                           self.latents.means[index].shape, self.settings.noise_offset)

    def evaluate(self, predict: Callable, autocast: Callable[[], contextlib.AbstractContextManager]) -> float:
        """The mean loss over every held-out image (call with the network in eval mode)."""
        total, count = 0.0, 0
        with torch.no_grad():
            for indices in self.batches:
                loss = self._batch_loss(indices, predict, autocast)
                total, count = total + float(loss) * len(indices), count + len(indices)
        return total / max(1, count)

    def _batch_loss(self, indices: list[int], predict: Callable,
                    autocast: Callable[[], contextlib.AbstractContextManager]) -> torch.Tensor:
        device = self.backend.device
        x0 = self.latents.latents(indices, "validation")  # the means: the cache is deterministic
        timesteps = to_device(torch.cat([self.draws[i][0] for i in indices]), device)
        noise = to_device(torch.cat([self.draws[i][1] for i in indices]), device)
        batch = noised_batch(x0, noise, timesteps, self.alphas, self.schedule.prediction_type)
        with autocast():
            prediction = predict(batch.x_t, batch.timesteps, self.texts.batch([self.prompts[i] for i in indices]))
        gamma = self.settings.min_snr_gamma
        weights = (min_snr_weights(self.alphas, timesteps, gamma, self.schedule.prediction_type)
                   if gamma > 0 else None)
        return diffusion_loss(prediction, batch.target, self.latents.loss_weights(indices), self.settings.loss_type,
                              weights)


def _batches_by_size(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """The held-out images in fixed batches of one size each."""
    groups: "OrderedDict[tuple[int, int], list[int]]" = OrderedDict()
    for index, size in enumerate(sizes):
        groups.setdefault(size, []).append(index)
    return [group[i:i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


def best_so_far(previous: Optional[float], value: float) -> bool:
    """True for the first finite value and every later one below the best so far."""
    return value == value and (previous is None or value < previous)
