"""The attention patch used while training: the inference patch of patch.py, with the
text-context module's output computed once per UNet call instead of once per layer."""
from __future__ import annotations

from typing import Any, Optional, Union

import torch

from .network import Hypernetwork
from .patch import HypernetPatch


class ContextMemoPatch:
    """The attn2 patch for training: in every cross-attention layer k = v = the same text
    context tensor, so the hypernetwork's output for it is computed once per UNet call and
    reused (A1111 recomputes it in each of SD1's 16 layers; same values, same gradients).
    It only reuses while the result is deterministic (no active dropout) and while `enabled`
    (off under gradient checkpointing, whose recomputation must redo exactly the same ops)."""

    def __init__(self, patch: HypernetPatch, hypernetwork: Hypernetwork):
        self.patch, self.hypernetwork, self.enabled = patch, hypernetwork, True
        self._dropout = any(isinstance(layer, torch.nn.Dropout) for module in hypernetwork.modules()
                            for layer in module.modules())
        self.reset()

    def reset(self) -> None:
        """Forget the cached output (call before every UNet call: the weights may have changed)."""
        self._input, self._version, self._outputs = None, None, None

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 extra_options: Optional[dict[str, Any]] = None):
        reusable = self.enabled and k is v and not (self._dropout and self.hypernetwork.training)
        if not reusable:
            return self.patch(q, k, v, extra_options)
        if self._input is not k or self._version != k._version:
            _, k_out, v_out = self.patch(q, k, v, extra_options)
            self._input, self._version, self._outputs = k, k._version, (k_out, v_out)
        return (q, *self._outputs)

    def to(self, device_or_dtype: Union[torch.device, torch.dtype, str]) -> "ContextMemoPatch":
        self.patch.to(device_or_dtype)
        self.reset()
        return self


def patched_for_training(model: Any,  # a ModelPatcher-like MODEL: ComfyUI's, or our HeadlessModel
                         hypernetwork: Hypernetwork) -> tuple[Any, ContextMemoPatch]:
    """A clone of a ModelPatcher-like `model` with the hypernetwork in attn1 (plain patch) and
    attn2 (memoised), strength 1; `model` is untouched."""
    patched = model.clone()
    patch = HypernetPatch([(hypernetwork, 1.0)])
    memo = ContextMemoPatch(patch, hypernetwork)
    patched.set_model_attn1_patch(patch)
    patched.set_model_attn2_patch(memo)
    return patched, memo
