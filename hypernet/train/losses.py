"""The diffusion training objective: noise a clean latent at a timestep and score the UNet's
prediction (docs/training.md states A1111's rules this follows, and the options beyond them).

A1111: the mean squared error between prediction and target (eps, or v for v-prediction
models), weighted per pixel by the alpha weight when asked. Options: the L1, Huber and
smooth-L1 losses (torch's, delta/beta 1) and min-SNR-gamma weighting per sample (Hang et al. 2023:
min(SNR, gamma) / SNR for eps, / (SNR + 1) for v, with SNR = abar / (1 - abar)). The noise and
timesteps themselves are drawn in random_draws.py (offset noise included)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .config import LOSS_TYPES


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


def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float,
                    prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights min(SNR, gamma) / SNR (eps) or / (SNR + 1) (v)."""
    a_t = alphas_cumprod[timesteps].float()
    snr = a_t / (1 - a_t)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


def elementwise_loss(prediction: torch.Tensor, target: torch.Tensor, loss_type: str = "mse") -> torch.Tensor:
    """The loss of every element (no reduction)."""
    prediction, target = prediction.float(), target.float()
    if loss_type == "mse":
        return (prediction - target) ** 2
    if loss_type == "l1":
        return (prediction - target).abs()
    if loss_type == "huber":
        return F.huber_loss(prediction, target, reduction="none", delta=1.0)
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, reduction="none", beta=1.0)
    raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                   loss_type: str = "mse", sample_weights: Optional[torch.Tensor] = None,
                   batch_size: Optional[int] = None) -> torch.Tensor:
    """The batch's loss: elementwise, times the alpha weight if any, averaged over each sample and
    weighted per sample (min-SNR) if asked, then summed over the samples and divided by
    `batch_size` (default: the samples given). A process training a share of a larger global
    batch passes the global size, so the shares' losses add up to the global mean."""
    error = elementwise_loss(prediction, target, loss_type)
    if weight is not None:
        error = error * weight
    per_sample = error.reshape(error.shape[0], -1).mean(dim=1)
    if sample_weights is not None:
        per_sample = per_sample * sample_weights.to(per_sample.device)
    return per_sample.sum() / (batch_size if batch_size is not None else error.shape[0])
