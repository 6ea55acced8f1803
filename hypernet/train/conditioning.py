"""What the training loop hands a backend's predict(): the text context alone (SD1/SD2), or for
SDXL a TextConditioning that also holds the pooled output. The size values SDXL's UNet takes are
not carried: training uses ComfyUI's defaults for a plain text encode (the picture's own size, no
crop), which both backends derive from the latent, so training sees what sampling will."""
from __future__ import annotations

from typing import Optional

import torch

from ..sd.components import Conditioning, TextConditioning


def split(cond: Conditioning) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(context [B,T,D], pooled [B,1280] or None)."""
    if isinstance(cond, TextConditioning):
        return cond.context, cond.pooled
    return cond, None


def rows(cond: Conditioning, start: int, stop: int) -> Conditioning:
    """Samples start..stop-1 of a batched conditioning."""
    context, pooled = split(cond)
    if pooled is None:
        return context[start:stop]
    return TextConditioning(context[start:stop], pooled[start:stop])


def joined(context: torch.Tensor, pooled: Optional[torch.Tensor]) -> Conditioning:
    """The inverse of split()."""
    return context if pooled is None else TextConditioning(context, pooled)
