"""The k and v modules of one width, run together when they read the same input.

In self-attention both modules transform norm1(x), in cross-attention both transform the
text context (docs/patch-contract.md). Fused, the two first Linear layers become one matrix
product (their weights concatenated) and every later Linear one batched product over the
stacked pair; activations, LayerNorm and eval-mode dropout act on the stacked tensor. The
math is the modules' own, and the weights stay in the modules, so files do not change.

Where it pays: in eval (sampling) on an accelerator, where the fused pair launches half the
kernels per layer and its weights are fused once and cached until they change. On a CPU one
product of twice the width runs no faster than two (bench/results/train_cpu.md). In training the
concatenated weights would be rebuilt on every call; they are not leaf tensors, so autocast's
cast cache misses them and every attention call would save its own low-precision copy for
backward (about 1.5 GB on SDXL). So training runs the modules one after the other, as A1111 does,
unless a caller asks for the fused pair; no GPU measurement has shown it winning there."""
from __future__ import annotations

import weakref
from typing import Optional, cast

import torch
import torch.nn.functional as F

from .network import HypernetworkModule

# Device types where the fused pair runs by default in eval mode (sampling).
FUSED_DEVICE_TYPES = frozenset({"cuda", "xpu", "mps"})

# Activations that act element by element: on the stacked pair they give what each module gives.
_ELEMENTWISE = (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.ELU, torch.nn.Hardswish, torch.nn.Tanh,
                torch.nn.Sigmoid, torch.nn.GELU, torch.nn.SiLU, torch.nn.CELU, torch.nn.SELU, torch.nn.Mish,
                torch.nn.Softplus, torch.nn.Hardtanh, torch.nn.Hardsigmoid, torch.nn.LogSigmoid,
                torch.nn.Tanhshrink, torch.nn.Softsign, torch.nn.Softshrink, torch.nn.Hardshrink,
                torch.nn.Threshold, torch.nn.Identity)
# Layers whose training-mode output is random: fused, their draws would differ from the modules'.
_RANDOM_IN_TRAINING = (torch.nn.Dropout, torch.nn.RReLU)

Pair = tuple[HypernetworkModule, HypernetworkModule]
# Inference keeps the fused weights between calls, keyed by the k module, until a weight changes.
_inference_weights: "weakref.WeakKeyDictionary[HypernetworkModule, tuple[tuple, list]]" = weakref.WeakKeyDictionary()


def pair_forward(pair: Pair, x: torch.Tensor, multiplier: Optional[float] = None,
                 fused: Optional[bool] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(k module(x), v module(x)), with the multiplier rules of HypernetworkModule.forward.

    `fused` None fuses in eval mode on FUSED_DEVICE_TYPES, never in training. Dropout in
    training always runs the modules one after the other, so its masks are the ones they draw."""
    module_k, module_v = pair
    if fused is None:
        fused = not module_k.training and x.device.type in FUSED_DEVICE_TYPES
    if not fused or (module_k.training and _has_random_layers(module_k)):
        return module_k(x, multiplier), module_v(x, multiplier)
    if module_k.training:
        strength = 1.0
    else:
        strength = module_k.multiplier if multiplier is None else multiplier
    hidden = _run_fused(_fused_weights(pair), x)
    lead = x.shape[:-1]
    return (x + hidden[0].reshape(*lead, -1) * strength, x + hidden[1].reshape(*lead, -1) * strength)


def _has_random_layers(module: HypernetworkModule) -> bool:
    return any(isinstance(layer, _RANDOM_IN_TRAINING) for layer in module.linear)


def _fused_weights(pair: Pair) -> list:
    """The fused steps of the pair; cached while no gradient is recorded and no weight changed."""
    if torch.is_grad_enabled() and any(p.requires_grad for p in pair[0].parameters()):
        return _fuse(pair)  # part of the autograd graph: gradients reach the modules' own weights
    parameters = [*pair[0].parameters(), *pair[1].parameters()]
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in parameters)
    cached = _inference_weights.get(pair[0])
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, _fuse(pair))
        _inference_weights[pair[0]] = cached
    return cached[1]


def _fuse(pair: Pair) -> list:
    """Each layer of the pair as one step on the stacked tensor [2, N, features]."""
    steps: list = []
    for layer_k, layer_v in zip(pair[0].linear, pair[1].linear):
        # Both modules come from one spec, so layer_v is of layer_k's class.
        if isinstance(layer_k, torch.nn.Linear):
            linear_v = cast(torch.nn.Linear, layer_v)
            if not any(step[0] == "first" for step in steps):
                steps.append(("first", torch.cat([layer_k.weight, linear_v.weight]),
                              torch.cat([layer_k.bias, linear_v.bias])))
            else:
                steps.append(("batched", torch.stack([layer_k.weight, linear_v.weight]).transpose(1, 2),
                              torch.stack([layer_k.bias, linear_v.bias]).unsqueeze(1)))
        elif isinstance(layer_k, torch.nn.LayerNorm):
            norm_v = cast(torch.nn.LayerNorm, layer_v)
            steps.append(("norm", layer_k.normalized_shape, layer_k.eps,
                          torch.stack([layer_k.weight, norm_v.weight]).unsqueeze(1),
                          torch.stack([layer_k.bias, norm_v.bias]).unsqueeze(1)))
        elif isinstance(layer_k, _ELEMENTWISE + _RANDOM_IN_TRAINING):
            steps.append(("shared", layer_k))  # random ones are only fused in eval, where they are fixed
        else:
            steps.append(("per_half", layer_k, layer_v))
    return steps


def _run_fused(steps: list, x: torch.Tensor) -> torch.Tensor:
    """The stacked hidden state [2, N, dim] after every step (no residual yet). The first step
    is always "first": a hypernetwork module starts with a Linear layer."""
    lead, rows = x.shape[:-1], x.reshape(-1, x.shape[-1])
    _, first_weight, first_bias = steps[0]
    hidden = F.linear(rows, first_weight, first_bias).view(rows.shape[0], 2, -1).transpose(0, 1)
    for step in steps[1:]:
        kind = step[0]
        if kind == "batched":
            hidden = torch.baddbmm(step[2], hidden, step[1])
        elif kind == "norm":
            hidden = torch.addcmul(step[4], F.layer_norm(hidden, step[1], eps=step[2]), step[3])
        elif kind == "shared":
            hidden = step[1](hidden)
        else:  # a layer with weights of its own or shape rules (PReLU, GLU, Softmax): each half as the module sees it
            halves = [layer(hidden[i].reshape(*lead, -1)).reshape(rows.shape[0], -1)
                      for i, layer in enumerate(step[1:])]
            hidden = torch.stack(halves)
    return hidden
