"""Preview grids during training: every preview prompt (one per line) with every preview seed,
the same seeds each time, so grids from different steps compare side by side. Each row is
labelled with its prompt (shortened to PROMPT_LABEL_CHARS characters), each column with its seed."""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import torch

from ..image_grid import labelled_grid
from ..sd.sampling import sample
from .backend import NoiseSchedule, TrainingBackend
from .conditioning import Conditioning, joined, rows
from .config import TrainConfig
from .latents import TextCache

PROMPT_LABEL_CHARS = 80  # a row label shows this much of its prompt (it wraps to the cell's width)


class _SamplingView:
    """What sd/sampling.sample() needs from a model, over a training backend whose latents are
    already scaled (so the scale factor is 1)."""

    latent_scale_factor = 1.0

    def __init__(self, backend: TrainingBackend, schedule: NoiseSchedule):
        self.alphas_cumprod, self.prediction_type = schedule.alphas_cumprod, schedule.prediction_type
        self.load_device, self.backend = backend.device, backend

    def apply_model(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                    pooled: Optional[torch.Tensor] = None, time_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        # time_ids: the sampler passes None or the latent's own size, which predict() uses anyway.
        return self.backend.predict(x_t, timesteps, joined(context, pooled))


def preview_prompts(config: TrainConfig, fallback: str) -> list[str]:
    """One prompt per non-empty line of `preview_prompt`; the first training prompt when empty."""
    return [line.strip() for line in config.preview_prompt.splitlines() if line.strip()] or [fallback]


def preview_seeds(config: TrainConfig) -> list[int]:
    """The seeds of `preview_seeds` (separated by commas or spaces), else `preview_seed`."""
    from ..input_values import seed_list

    return seed_list(config.preview_seeds or "", "preview_seeds") or [int(config.preview_seed)]


def preview_labels(prompts: list[str], seeds: list[int]) -> tuple[list[str], list[str]]:
    """The grid's row labels (the prompts, long ones cut with an ellipsis) and column labels (the seeds)."""
    rows = [" ".join(prompt.split()) for prompt in prompts]
    rows = [row if len(row) <= PROMPT_LABEL_CHARS else row[:PROMPT_LABEL_CHARS - 1].rstrip() + "\u2026"
            for row in rows]
    return rows, [f"seed {seed}" for seed in seeds]


class PreviewGrid:
    """Renders the prompt x seed grid with the current weights: one row per prompt, labelled."""

    def __init__(self, backend: TrainingBackend, schedule: NoiseSchedule, texts: TextCache, config: TrainConfig,
                 prompts: list[str], latent_shape: Sequence[int]):  # one latent's [C, h, w]
        self.backend, self.schedule, self.config = backend, schedule, config
        self.seeds = preview_seeds(config)
        self.latent_shape = latent_shape
        self.conds = [texts.batch([prompt, config.preview_negative]) for prompt in prompts]
        self.row_labels, self.column_labels = preview_labels(prompts, self.seeds)

    def render(self, autocast: Callable[[], contextlib.AbstractContextManager]) -> torch.Tensor:
        """The labelled grid as one IMAGE [1,H,W,3] (see image_grid.py; call in eval mode, without
        gradients)."""
        cells = [[self._sample(cond, seed, autocast) for seed in self.seeds] for cond in self.conds]
        return labelled_grid(cells, self.row_labels, self.column_labels)

    def _sample(self, cond: Conditioning, seed: int,
                autocast: Callable[[], contextlib.AbstractContextManager]) -> torch.Tensor:
        config = self.config
        with torch.no_grad(), autocast():
            latent = sample(_SamplingView(self.backend, self.schedule), torch.zeros(1, *self.latent_shape),
                            rows(cond, 0, 1), rows(cond, 1, 2), seed=seed, steps=config.preview_steps,
                            cfg=config.preview_cfg, sampler_name="euler", scheduler="normal")
        return self.backend.decode_latents(latent.float().to(self.backend.device)).float().cpu()
