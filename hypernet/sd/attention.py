"""A diffusers attention processor that honours ComfyUI-style attention patches.

ComfyUI's patch contract: a patch is a callable `(q, k, v, extra_options) -> (q, k, v)` that
sees the inputs of to_q/to_k/to_v *before* projection. In self-attention (attn1) all three
are the normalised hidden states; in cross-attention (attn2) q is the hidden states and
k = v = the text context. Patches run in list order, each one receiving the previous one's
output, in every transformer block.

The processor is installed once per UNet. Which patches are active is not stored on the
UNet (its weights are shared between model clones) but in a context variable that
`HeadlessModel.apply_model` sets for the duration of one call, so clones never interfere.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from diffusers.models.attention_processor import Attention

AttentionPatch = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], tuple]


@dataclass(frozen=True)
class ActivePatches:
    """The patches in force during one UNet call."""

    attn1: Sequence[AttentionPatch] = ()
    attn2: Sequence[AttentionPatch] = ()
    transformer_options: dict = field(default_factory=dict)


# Set on a UNet once its attention modules have PatchableAttnProcessors. A plain attribute, not a
# submodule or tensor, which torch's stubs for Module.__setattr__ do not foresee: hence setattr.
_PATCHABLE_MARK = "_hypernet_studio_patchable"

_ACTIVE: contextvars.ContextVar[Optional[ActivePatches]] = contextvars.ContextVar(
    "hypernet_studio_active_patches", default=None)


@contextlib.contextmanager
def active_patches(patches: Optional[ActivePatches]) -> Iterator[None]:
    """Make `patches` the ones every PatchableAttnProcessor applies inside this block."""
    token = _ACTIVE.set(patches)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


_BLOCK_NAME = re.compile(r"^(down_blocks|mid_block|up_blocks)\.?(\d*)\.attentions\.(\d+)"
                         r"\.transformer_blocks\.(\d+)\.(attn[12])$")
_COMFY_BLOCK_KIND = {"down_blocks": "input", "mid_block": "middle", "up_blocks": "output"}


def _block_identity(module_name: str) -> dict:
    """extra_options entries that say where in the UNet an attention module sits."""
    match = _BLOCK_NAME.match(module_name)
    if not match:
        return {"module_name": module_name}
    kind, block, attention, transformer, which = match.groups()
    return {
        "module_name": module_name,
        "block": (_COMFY_BLOCK_KIND[kind], int(block or 0)),
        "attention_index": int(attention),
        "transformer_index": int(transformer),
        "attn": which,
    }


class PatchableAttnProcessor:
    """Scaled-dot-product attention with the active attn1/attn2 patches applied to the
    unprojected q/k/v inputs. With no patches it computes what diffusers' AttnProcessor2_0
    computes for the SD UNet (no masks, no spatial/group norm are used there)."""

    def __init__(self, module_name: str, is_cross_attention: bool):
        self.module_name = module_name
        self.is_cross_attention = is_cross_attention
        self.identity = _block_identity(module_name)

    def __call__(self, attn: "Attention", hidden_states: torch.Tensor,
                 encoder_hidden_states: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None,
                 temb: Optional[torch.Tensor] = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        if attn.spatial_norm is not None or attn.group_norm is not None or hidden_states.ndim != 3:
            raise NotImplementedError(f"{self.module_name}: only SD transformer-block attention is supported")
        residual = hidden_states
        q_in = hidden_states
        k_in = v_in = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            k_in = v_in = attn.norm_encoder_hidden_states(encoder_hidden_states)

        active = _ACTIVE.get()
        if active is not None:
            patches = active.attn2 if self.is_cross_attention else active.attn1
            if patches:
                extra_options = dict(active.transformer_options)
                extra_options.update(self.identity)
                extra_options.update(n_heads=attn.heads, dim_head=attn.to_q.out_features // attn.heads,
                                     original_shape=tuple(hidden_states.shape))
                for patch in patches:
                    q_in, k_in, v_in = patch(q_in, k_in, v_in, extra_options)

        batch = q_in.shape[0]
        query, key, value = attn.to_q(q_in), attn.to_k(k_in), attn.to_v(v_in)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key.shape[2], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_patchable_attention(unet: torch.nn.Module) -> None:
    """Give every transformer-block attention module of `unet` a PatchableAttnProcessor (idempotent)."""
    if getattr(unet, _PATCHABLE_MARK, False):
        return
    for name, module in unet.named_modules():
        if name.endswith((".attn1", ".attn2")) and hasattr(module, "set_processor"):
            module.set_processor(PatchableAttnProcessor(name, is_cross_attention=name.endswith(".attn2")))
    setattr(unet, _PATCHABLE_MARK, True)


def attention_input_widths(unet: torch.nn.Module) -> list[int]:
    """Sorted distinct widths of the k/v inputs of every attn1/attn2 (what a hypernetwork
    module is keyed by): the self-attention widths plus the text-context width."""
    widths = {module.to_k.in_features for name, module in unet.named_modules()
              if name.endswith((".attn1", ".attn2")) and hasattr(module, "to_k")}
    return sorted(widths)
