"""The parts of a Stable Diffusion checkpoint, as loaded headless (no ComfyUI)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import torch

PredictionType = Literal["epsilon", "v_prediction"]
Family = Literal["sd1", "sd2", "sdxl", "tiny", "tiny-sdxl"]
MODULE_NAMES = ("unet", "text_encoder", "text_encoder_2", "vae")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with what was detected in it."""


@dataclass
class SDComponents:
    """Everything the headless MODEL/CLIP/VAE objects need from one checkpoint.

    `unet` is a diffusers UNet2DConditionModel, `text_encoder` a transformers CLIPTextModel,
    `tokenizer` a CLIPTokenizer, `vae` a diffusers AutoencoderKL. `alphas_cumprod` is the
    1000-step DDPM table (fp32, CPU) the sampler and trainer derive sigmas from.
    `latent_scale_factor` turns VAE latents into the UNet's latent space (0.18215 for SD1/2,
    0.13025 for SDXL). `default_clip_layer` is the CLIPSetLastLayer value the checkpoint was
    trained with (-1 for SD1, -2 for SD2 and SDXL, which read their encoders at the penultimate layer).

    SDXL has a second text encoder, as in diffusers' SDXL pipelines: `text_encoder` is CLIP ViT-L
    (768 wide) and `text_encoder_2` OpenCLIP ViT-bigG, a CLIPTextModelWithProjection whose
    projected pooled output (1280) conditions the UNet beside the size values. `tokenizer_2`
    has the same vocabulary as `tokenizer` but pads with id 0 where CLIP-L pads with the end token.
    Both are None for SD1/SD2."""

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
    text_encoder_2: Any = None
    tokenizer_2: Any = None

    def __post_init__(self) -> None:
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        self.alphas_cumprod = self.alphas_cumprod.detach().to("cpu", torch.float32)

    @property
    def is_sdxl(self) -> bool:
        """True when the UNet also takes a pooled text embedding and size values (SDXL's text_time)."""
        return self.text_encoder_2 is not None

    def module_names(self) -> tuple[str, ...]:
        """The attribute names of the torch modules present ("text_encoder_2" only on SDXL)."""
        return tuple(name for name in MODULE_NAMES if getattr(self, name) is not None)


@dataclass
class TextConditioning:
    """What a prompt conditions the UNet with, batched.

    `context` [B, T, D] is the cross-attention input (SDXL: D = 2048, CLIP-L's 768 then
    OpenCLIP-G's 1280). `pooled` [B, 1280] is OpenCLIP-G's projected pooled output, SDXL only
    (None for SD1/SD2, whose UNet takes no pooled input). `time_ids` [B, 6] are SDXL's size
    values in the order height, width, crop_h, crop_w, target_height, target_width (see
    sdxl.size_time_ids); None lets the sampler use the latent's own size, as ComfyUI's KSampler
    does for a plain text encode."""

    context: torch.Tensor
    pooled: Optional[torch.Tensor] = None
    time_ids: Optional[torch.Tensor] = None


# What a sampler or trainer conditions on: a bare text context (SD1/SD2), or a TextConditioning.
Conditioning = Union[torch.Tensor, TextConditioning]


def scaled_linear_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> torch.Tensor:
    """The DDPM noise table every SD1/SD2/SDXL checkpoint was trained with ("scaled_linear" betas)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)
