"""The built-in "tiny-sdxl (built-in)" checkpoint: SDXL's conditioning and attention widths,
random weights, everything else cut down.

A hypernetwork trained on it must have the keys of a real SDXL one, so what a hypernetwork
sees is kept exactly: self-attention at 640 (10 heads) and 1280 (20 heads) channels,
cross-attention from a 2048-wide context (CLIP-L's 768 then OpenCLIP-G's 1280), 64 channels
per head, linear transformer projections, SDXL's "text_time" added conditioning (pooled 1280 +
6 x 256 size embeddings = 2816 into a 1280-wide time embedding) and its latent scale 0.13025.
What is cut: the 320-channel level (it has no attention in SDXL), the middle block, and every
depth to one (one res block per level, one transformer block per attention). The UNet is still
about 325 M parameters, because 640- and 1280-wide convolutions cannot be made small; a
forward pass on an 8x8 latent takes a fraction of a second on a CPU.

The text encoders keep their widths (768, 1280; pooled projection 1280) but have two layers
each and narrow MLPs, and use the byte-level tokenizer of tiny-sd: CLIP's 49408-token
vocabulary would add 101 M embedding parameters (400 MB) that nothing here needs. Its ids
follow CLIP's conventions (start, end, "!" = 0), so the L/G padding rules are the real ones.
The VAE is tiny-sd's with SDXL's scale factor.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import torch

from .components import SDComponents, scaled_linear_alphas_cumprod
from .sdxl import (
    SDXL_CONTEXT_DIM,
    SDXL_HEAD_CHANNELS,
    SDXL_LATENT_SCALE,
    SDXL_POOLED_DIM,
    SIZE_EMBEDDING_DIM,
    SIZE_VALUES,
)
from .tiny import TINY_SDXL_MODEL_NAME, build_tiny_tokenizer, build_tiny_vae, cached_components

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

CLIP_L_WIDTH = 768
CLIP_G_WIDTH = SDXL_CONTEXT_DIM - CLIP_L_WIDTH  # 1280
ATTENTION_WIDTHS = (640, 1280)
SDXL_TIME_EMBEDDING_DIM = 1280


def _build_unet() -> torch.nn.Module:
    from diffusers.models import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=ATTENTION_WIDTHS,
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        mid_block_type=None, transformer_layers_per_block=1,
        attention_head_dim=tuple(width // SDXL_HEAD_CHANNELS for width in ATTENTION_WIDTHS),  # diffusers: head count
        cross_attention_dim=SDXL_CONTEXT_DIM, use_linear_projection=True,
        # SDXL's own time-embedding width; diffusers would otherwise take 4 x the first level's channels.
        time_embedding_dim=SDXL_TIME_EMBEDDING_DIM,
        addition_embed_type="text_time", addition_time_embed_dim=SIZE_EMBEDDING_DIM,
        projection_class_embeddings_input_dim=SDXL_POOLED_DIM + SIZE_VALUES * SIZE_EMBEDDING_DIM,
        norm_num_groups=32,
    )


def _build_text_encoder(width: int, act: str, tokenizer: "CLIPTokenizer", with_projection: bool) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width, num_hidden_layers=2,
        num_attention_heads=width // SDXL_HEAD_CHANNELS, max_position_embeddings=77, hidden_act=act,
        projection_dim=SDXL_POOLED_DIM, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _build(seed: int) -> SDComponents:
    tokenizer, tokenizer_2 = build_tiny_tokenizer(), build_tiny_tokenizer(pad_token="!")
    # Weights made under inference_mode could never take part in a backward pass (training).
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _build_unet()
        text_encoder = _build_text_encoder(CLIP_L_WIDTH, "quick_gelu", tokenizer, with_projection=False)
        text_encoder_2 = _build_text_encoder(CLIP_G_WIDTH, "gelu", tokenizer_2, with_projection=True)
        vae = build_tiny_vae(SDXL_LATENT_SCALE)
    for module in (unet, text_encoder, text_encoder_2, vae):
        module.eval().requires_grad_(False)
    return SDComponents(
        unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
        alphas_cumprod=scaled_linear_alphas_cumprod(), prediction_type="epsilon", family="tiny-sdxl",
        name=TINY_SDXL_MODEL_NAME, latent_scale_factor=SDXL_LATENT_SCALE, context_dim=SDXL_CONTEXT_DIM,
        default_clip_layer=-2, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
    )


def build_tiny_sdxl_components(seed: int = 0, device: Optional[Union[str, torch.device]] = None,
                               dtype: Optional[torch.dtype] = None) -> SDComponents:
    """The built-in tiny SDXL checkpoint, bit-identical for a given seed.

    Built once per process and seed (a few seconds, about 1.4 GB of fp32 weights); later calls
    return the cached components. Another device or dtype gets a moved copy."""
    return cached_components((TINY_SDXL_MODEL_NAME, seed), lambda: _build(seed), device, dtype)
