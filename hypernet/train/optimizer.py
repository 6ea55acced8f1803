"""The optimizer: torch.optim.<name> with torch's defaults, as A1111 makes it; `weight_decay` and
`optimizer_args` ("betas=0.9,0.99 eps=1e-8") override them. Its learning rate is learning_rate.py's."""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Iterable, Optional, Union

import torch

from ..errors import InputError
from .config import OPTIMIZERS, TrainConfig

_FUSED_OPTIMIZERS = ("AdamW", "Adam", "SGD", "Adagrad")
_NOT_OPTIONS = {"self", "params", "lr"}
Scalar = Union[bool, int, float]


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or name in ("LBFGS", "SparseAdam"):
        raise InputError("optimizer", f"{name!r} is not a usable torch.optim optimizer; try one of "
                                      f"{', '.join(OPTIMIZERS)}")
    return cls


def _scalar(text: str) -> Scalar:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if re.fullmatch(r"[+-]?\d+", lowered):
        return int(lowered)
    return float(lowered)


def parse_optimizer_args(text: str, optimizer: str) -> dict[str, Any]:
    """`key=value` pairs separated by spaces; a comma makes a tuple ("betas=0.9,0.99"); values are
    numbers or true/false. Every key must be an option of torch.optim.<optimizer>."""
    options = set(inspect.signature(optimizer_class(optimizer).__init__).parameters) - _NOT_OPTIONS
    parsed: dict[str, Any] = {}
    for item in (text or "").split():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InputError("optimizer_args", f"{item!r} is not key=value (e.g. 'betas=0.9,0.99 eps=1e-8')")
        if key not in options:
            raise InputError("optimizer_args", f"{key!r} is not an option of torch.optim.{optimizer}; it takes "
                                               f"{', '.join(sorted(options))}")
        try:
            parsed[key] = tuple(_scalar(v) for v in value.split(",")) if "," in value else _scalar(value)
        except ValueError:
            raise InputError("optimizer_args", f"{key}={value!r}: expected numbers or true/false") from None
    return parsed


def optimizer_options(config: TrainConfig) -> dict[str, Any]:
    """The keyword arguments beyond params and lr (torch's defaults where nothing is set)."""
    options = parse_optimizer_args(config.optimizer_args, config.optimizer)
    if config.weight_decay >= 0 and "weight_decay" not in options:
        options["weight_decay"] = float(config.weight_decay)
    return options


def make_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], learn_rate: float,
                   options: Optional[dict[str, Any]] = None) -> torch.optim.Optimizer:
    """torch.optim.<name>(params, lr, **options).

    Where torch has a fused kernel for the optimizer on this device it is used: same update
    rule in one pass over the weights (about 8x faster for AdamW on a CPU, which matters with
    SD1's 22M hypernetwork parameters)."""
    # Typed as a plain callable: each subclass's constructor takes lr and options the base class's lacks.
    cls: Callable[..., torch.optim.Optimizer] = optimizer_class(name)
    parameters, options = list(parameters), dict(options or {})
    if name in _FUSED_OPTIMIZERS and "fused" not in options:
        try:
            return cls(parameters, lr=learn_rate, fused=True, **options)
        except (RuntimeError, TypeError, ValueError):
            pass  # no fused kernel for this device or dtype (or options it does not support)
    try:
        return cls(parameters, lr=learn_rate, **options)
    except (TypeError, ValueError) as exc:
        raise InputError("optimizer_args", f"torch.optim.{name} refuses these options: {exc}") from None
