"""The parts of a Stable Diffusion checkpoint, as loaded headless (no ComfyUI)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

PredictionType = Literal["epsilon", "v_prediction"]
Family = Literal["sd1", "sd2", "tiny"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with what was detected in it."""


@dataclass
class SDComponents:
    """Everything the headless MODEL/CLIP/VAE objects need from one checkpoint.

    `unet` is a diffusers UNet2DConditionModel, `text_encoder` a transformers CLIPTextModel,
    `tokenizer` a CLIPTokenizer, `vae` a diffusers AutoencoderKL. `alphas_cumprod` is the
    1000-step DDPM table (fp32, CPU) the sampler and trainer derive sigmas from.
    `latent_scale_factor` turns VAE latents into the UNet's latent space (0.18215 for SD1/2).
    `default_clip_layer` is the CLIPSetLastLayer value the checkpoint was trained with
    (-1 for SD1, -2 for SD2, whose OpenCLIP encoder is read at the penultimate layer)."""

    unet: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any
    alphas_cumprod: torch.Tensor
    prediction_type: PredictionType
    family: Family
    name: str
    latent_scale_factor: float
    context_dim: int
    default_clip_layer: int = -1

    def __post_init__(self) -> None:
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        self.alphas_cumprod = self.alphas_cumprod.detach().to("cpu", torch.float32)


def scaled_linear_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> torch.Tensor:
    """The DDPM noise table every SD1/SD2 checkpoint was trained with ("scaled_linear" betas)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)
