"""The diffusion training objective: noise a clean latent at a timestep and score the UNet's
prediction (docs/training.md states A1111's rules this follows)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class NoisedBatch:
    """A q-sampled batch: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, and what the UNet should predict."""

    x_t: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor


def noised_batch(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
                 prediction_type: str) -> NoisedBatch:
    """q-sample `x0` at integer `timesteps`; the target is eps, or v for v-prediction models."""
    a_t = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise
    target = noise if prediction_type == "epsilon" else a_t.sqrt() * noise - (1 - a_t).sqrt() * x0
    return NoisedBatch(x_t, timesteps, target)


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """MSE over all elements (every sample in a batch has the same size), alpha-weighted if asked."""
    error = (prediction.float() - target.float()) ** 2
    return (error * weight).mean() if weight is not None else error.mean()
