"""The attention patch used while training: the inference patch of patch.py, with the
text-context module's output computed once per UNet call instead of once per layer."""
from __future__ import annotations

from typing import Any, Optional, Union

import torch

from .network import Hypernetwork
from .patch import HypernetPatch


class ContextMemoPatch:
    """The attn2 patch for training: in every cross-attention layer k = v = the same text
    context, so the hypernetwork's output for it is computed once per UNet call and reused
    (A1111 recomputes it in each of SD1's 16 layers, SDXL's 70; same values, same gradients).

    The trainer primes it with the context before each UNet call, so the result lives outside
    any checkpointed block and a recomputation during backward reuses it too. Without priming it
    computes on first use (`lazy`), which gradient checkpointing turns off, since a recomputed
    block must redo exactly the operations of its first pass. Nothing is reused while dropout
    is active: each layer then draws its own mask, as in A1111."""

    def __init__(self, patch: HypernetPatch, hypernetwork: Hypernetwork):
        self.patch, self.hypernetwork, self.lazy = patch, hypernetwork, True
        self._dropout = any(isinstance(layer, torch.nn.Dropout) for module in hypernetwork.modules()
                            for layer in module.modules())
        # The cached output (reset() forgets it): the context it is for, that tensor's version, (k, v).
        self._input: Optional[torch.Tensor] = None
        self._version: Optional[int] = None
        self._outputs: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def reset(self) -> None:
        """Forget the cached output (call before every UNet call: the weights may have changed)."""
        self._input, self._version, self._outputs = None, None, None

    def prime(self, context: torch.Tensor) -> None:
        """Compute the output for `context` now, before the UNet call that will use it."""
        self.reset()
        if self._reusable():
            _, k_out, v_out = self.patch(context, context, context)
            self._input, self._version, self._outputs = context, context._version, (k_out, v_out)

    def _reusable(self) -> bool:
        return not (self._dropout and self.hypernetwork.training)

    def _outputs_for(self, k: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """The cached (k, v) output when it is for `k`: the same tensor, or (a copy made on the
        way into the UNet) one equal to it that needs no gradient of its own; else None."""
        cached, outputs = self._input, self._outputs
        if cached is None or outputs is None:
            return None
        if k is cached:
            return outputs if k._version == self._version else None
        holds = (not k.requires_grad and k.shape == cached.shape and k.dtype == cached.dtype
                 and k.device == cached.device and bool(torch.equal(k, cached)))
        return outputs if holds else None

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 extra_options: Optional[dict[str, Any]] = None):
        if k is not v or not self._reusable():
            return self.patch(q, k, v, extra_options)
        outputs = self._outputs_for(k)
        if outputs is not None:
            return (q, *outputs)
        if not self.lazy:
            return self.patch(q, k, v, extra_options)
        _, k_out, v_out = self.patch(q, k, v, extra_options)
        self._input, self._version, self._outputs = k, k._version, (k_out, v_out)
        return q, k_out, v_out

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
