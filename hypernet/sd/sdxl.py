"""SDXL's extra conditioning, reimplemented from ComfyUI's documented behaviour and the SDXL paper.

Besides the text context (CLIP-L's and OpenCLIP-G's penultimate hidden states side by side,
768 + 1280 = 2048 wide), the SDXL UNet takes OpenCLIP-G's projected pooled output (1280) and six
size values: the original height and width, the crop's top and left, the target height and width.
Each size value is embedded as a 256-wide sinusoid and the six are appended after the pooled
output (1280 + 6 * 256 = 2816), which diffusers' "text_time" added conditioning does when given
`added_cond_kwargs={"text_embeds": pooled, "time_ids": values}` in this order. ComfyUI's order of
the values is height, width, crop_h, crop_w, target_height, target_width; its KSampler fills
width and height from the latent (x8) when the conditioning does not carry them, crops default
to 0 and the target size to the (filled) size.
"""
from __future__ import annotations

from typing import Optional

import torch

SDXL_LATENT_SCALE = 0.13025
SDXL_CONTEXT_DIM = 2048
SDXL_POOLED_DIM = 1280
SIZE_VALUES = 6  # height, width, crop_h, crop_w, target_height, target_width
SIZE_EMBEDDING_DIM = 256  # per size value
SDXL_HEAD_CHANNELS = 64  # every SDXL attention head is 64 channels wide
VAE_DOWNSCALE = 8  # pixels per latent cell


def size_time_ids(width: int, height: int, crop_w: int = 0, crop_h: int = 0, target_width: Optional[int] = None,
                  target_height: Optional[int] = None) -> torch.Tensor:
    """SDXL's six size values [6] (fp32) in the UNet's order: height, width, crop_h, crop_w,
    target_height, target_width; the target size defaults to the size. Arguments come in
    ComfyUI's CLIPTextEncodeSDXL order (width before height)."""
    target_width = width if target_width is None else target_width
    target_height = height if target_height is None else target_height
    return torch.tensor([height, width, crop_h, crop_w, target_height, target_width], dtype=torch.float32)


def latent_time_ids(latent: torch.Tensor) -> torch.Tensor:
    """The size values for a latent [B,4,h,w] whose conditioning gives none: (8h, 8w, 0, 0, 8h, 8w),
    what ComfyUI's KSampler fills in for a plain text encode."""
    return size_time_ids(latent.shape[-1] * VAE_DOWNSCALE, latent.shape[-2] * VAE_DOWNSCALE)


def batched(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """`tensor` [1 or batch, ...] as [batch, ...] (a view when expanded)."""
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(f"{what} has batch {tensor.shape[0]}, the latent {batch}")
