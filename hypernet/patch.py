"""The attention patch that applies hypernetworks, for ComfyUI's ModelPatcher and HeadlessModel.

Patch contract (ComfyUI's attn1/attn2 patches): `patch(q, k, v, extra_options) -> (q, k, v)`,
called with the inputs of to_q/to_k/to_v before projection. Self-attention passes norm1(x) three
times; cross-attention passes norm2(x) and the text context twice. So the module for a call is
picked by the input width `k.shape[-1]` (e.g. 320 in self-attention, 768 in SD1 cross-attention),
which is exactly A1111's placement (it transforms `context` before to_k/to_v). A width the file
has no module for passes through untouched.

Precision: hypernetwork weights stay fp32 (the master copy a trainer updates). The input is
cast to the weights' dtype, the result cast back to the input's dtype. Under autocast the Linear
layers run in the autocast dtype, as in A1111; without autocast they run in fp32, which is more
precise than ComfyUI's own loader (it casts the weights to the UNet dtype). `.to(dtype)` is
therefore ignored on purpose; `.to(device)` moves the weights.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

from .kv_pair import pair_forward
from .network import Hypernetwork

logger = logging.getLogger(__name__)

MIN_STRENGTH, MAX_STRENGTH = -10.0, 10.0  # Apply Hypernet's strength range (and a comparison grid's)


class HypernetPatch:
    """Applies one or more (hypernetwork, strength) pairs in order: k' = hn2.k(hn1.k(k)), same for v.

    In eval mode each network adds f(x) * strength; in training mode A1111 uses 1 (see
    HypernetworkModule.forward)."""

    def __init__(self, hypernetworks_with_strengths: Sequence[tuple[Hypernetwork, float]]):
        self.entries = [(hypernetwork, float(strength)) for hypernetwork, strength in hypernetworks_with_strengths]
        # Per entry and input width, the last inputs and outputs while sampling (see _reused).
        self._last: dict[tuple[int, int], tuple] = {}  # (k, v, _state_of(...), (k_out, v_out))

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: Any = None):
        for index, (hypernetwork, strength) in enumerate(self.entries):
            k, v = self._reused(index, k, v) or self._run(index, hypernetwork, strength, k, v)
        return q, k, v

    def _run(self, index: int, hypernetwork: Hypernetwork, strength: float, k: torch.Tensor,
             v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if k is v:  # both modules read one input: run them as a pair (kv_pair.py)
            k_out, v_out = _apply_pair(hypernetwork, k, strength)
        else:
            k_out, v_out = _apply_module(hypernetwork, k, 0, strength), _apply_module(hypernetwork, v, 1, strength)
        if not torch.is_grad_enabled():
            self._last[(index, k.shape[-1])] = (k, v, _state_of(hypernetwork, k, v), (k_out, v_out))
        return k_out, v_out

    def _reused(self, index: int, k: torch.Tensor, v: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """While sampling (no gradients), the text context reaches every cross-attention layer of
        one UNet call as the same tensor: its result is computed once per call, not per layer
        (SD1 has 16 such layers, SDXL 70). Reused only for the very same, unmodified inputs and
        unchanged weights; training has its own reuse (training_patch.py). One slot per width, so
        the self-attention inputs between two cross-attention layers do not evict the context."""
        last = self._last.get((index, k.shape[-1]))
        if last is None or torch.is_grad_enabled() or last[0] is not k or last[1] is not v:
            return None
        if last[2] != _state_of(self.entries[index][0], k, v):
            return None
        return last[3]

    def __deepcopy__(self, memo: dict) -> "HypernetPatch":
        """Share the networks: ComfyUI deep-copies model_options on every clone(), and copying
        the weights each time would waste memory and cut a trainer off from its live network."""
        return HypernetPatch(list(self.entries))

    def to(self, device_or_dtype: Any) -> "HypernetPatch":
        """Move the weights to a device; dtypes are ignored (fp32 master weights, see module doc)."""
        if isinstance(device_or_dtype, torch.dtype):
            return self
        self._last.clear()
        for hypernetwork, _ in self.entries:
            hypernetwork.to(device=device_or_dtype)
        return self

    def __repr__(self) -> str:
        parts = ", ".join(f"{hn.name}:{strength:g}" for hn, strength in self.entries)
        return f"HypernetPatch({parts})"


def _state_of(hypernetwork: Hypernetwork, k: torch.Tensor, v: torch.Tensor) -> tuple:
    """What must not have changed for a result to be reused: the inputs' contents (version
    counters; inference tensors cannot change outside inference mode and have none), the
    weights' versions and places, and train/eval mode."""
    def version(tensor: torch.Tensor) -> Optional[int]:
        return None if tensor.is_inference() else tensor._version

    weights = tuple((p.data_ptr(), p._version) for p in hypernetwork.parameters())
    return version(k), version(v), weights, hypernetwork.training


def _apply_module(hypernetwork: Hypernetwork, x: torch.Tensor, half: int, strength: float) -> torch.Tensor:
    """Run the k (half 0) or v (half 1) module for x's width, if the network has one."""
    pair = hypernetwork.layers.get(x.shape[-1])
    if pair is None or (strength == 0 and not pair[half].training):
        return x
    module = pair[half]
    weight = _weight_on(module, x.device)
    y = module(x.to(weight.dtype), multiplier=strength)
    return y.to(x.dtype)


def _apply_pair(hypernetwork: Hypernetwork, x: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, v) for an input both modules read; x itself twice when the network has no module for it."""
    pair = hypernetwork.layers.get(x.shape[-1])
    if pair is None or (strength == 0 and not pair[0].training):
        return x, x
    weight = _weight_on(pair[0], x.device)
    _weight_on(pair[1], x.device)
    k, v = pair_forward(pair, x.to(weight.dtype), multiplier=strength)
    return k.to(x.dtype), v.to(x.dtype)


def _weight_on(module: torch.nn.Module, device: torch.device) -> torch.Tensor:
    """The module's first weight, after moving the module to `device` if it is elsewhere."""
    weight = next(module.parameters())
    if weight.device != device:
        module.to(device)
        weight = next(module.parameters())
    return weight


# ---------------------------------------------------------------------------- model widths
def model_attention_widths(model: Any) -> Optional[list[int]]:
    """Sorted distinct widths entering to_k in the model's attention layers, or None if unknown.

    HeadlessModel reports them itself; for a ComfyUI ModelPatcher the UNet's attention modules
    are inspected (their to_k Linear's in_features)."""
    widths_method = getattr(model, "attention_widths", None)
    if callable(widths_method):
        try:
            return sorted({int(w) for w in widths_method()})
        except Exception:  # a foreign model object; width checks are advisory only
            logger.debug("attention_widths() failed", exc_info=True)
    diffusion_model = getattr(getattr(model, "model", None), "diffusion_model", None)
    if diffusion_model is None or not hasattr(diffusion_model, "modules"):
        return None
    widths = set()
    for module in diffusion_model.modules():
        to_k = getattr(module, "to_k", None)
        in_features = getattr(to_k, "in_features", None)
        if isinstance(in_features, int):
            widths.add(in_features)
    return sorted(widths) or None


def check_widths(hypernetwork: Hypernetwork, model_widths: Optional[Iterable[int]]) -> Optional[str]:
    """A warning text when the file's widths and the model's differ, else None. It says which
    widths apply, which never do, and when none match (an SD1 file on an SDXL model has
    640/1280 modules that do apply, but its 768 context module never does)."""
    if model_widths is None:
        return None
    model_widths = set(model_widths)
    file_widths = set(hypernetwork.sizes)
    unused = sorted(file_widths - model_widths)
    untouched = sorted(model_widths - file_widths)
    if not unused and not untouched:
        return None
    parts = [f"hypernetwork {hypernetwork.name!r} has widths {sorted(file_widths)}, "
             f"the model attends at {sorted(model_widths)}"]
    matching = sorted(file_widths & model_widths)
    if not matching:
        parts.append("none match, so applying it changes nothing (made for another model family?)")
        return "; ".join(parts)
    parts.append(f"only {matching} apply")
    if unused:
        parts.append(f"{unused} never apply (made for another model family?)")
    if untouched:
        parts.append(f"attention at {untouched} stays unchanged")
    return "; ".join(parts)


def apply_hypernetwork(model: Any, hypernetwork: Hypernetwork, strength: float = 1.0,
                       warn: Optional[Callable[[str], None]] = None) -> Any:
    """A clone of `model` with the hypernetwork patched into attn1 and attn2; `model` is untouched.

    Works on anything with clone(), set_model_attn1_patch() and set_model_attn2_patch()
    (ComfyUI's ModelPatcher, our HeadlessModel). Strength 0 returns `model` itself. Applying
    several times chains the networks in order, because each call appends one patch. A
    width-mismatch warning is logged when the network is applied, and also handed to `warn`
    (whatever the strength), for a node to show."""
    warning = check_widths(hypernetwork, model_attention_widths(model))
    if warning and warn is not None:
        warn(warning)
    if strength == 0:
        return model
    for method in ("clone", "set_model_attn1_patch", "set_model_attn2_patch"):
        if not callable(getattr(model, method, None)):
            raise TypeError(f"apply_hypernetwork: MODEL of type {type(model).__name__} has no {method}()")
    if warning:
        logger.warning(warning)
    patched = model.clone()
    patch = HypernetPatch([(hypernetwork, strength)])
    patched.set_model_attn1_patch(patch)
    patched.set_model_attn2_patch(patch)
    return patched
