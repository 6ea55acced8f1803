"""The optimizer and its learning rate.

The optimizer is torch.optim.<name> with torch's defaults, as A1111 makes it; `weight_decay` and
`optimizer_args` ("betas=0.9,0.99 eps=1e-8") override them. The learning rate follows either
A1111's schedule string (`a1111`, the default) or one of torch's / diffusers' schedulers with a
warmup: constant_with_warmup, linear and cosine (diffusers' definitions) and
cosine_with_restarts (torch's CosineAnnealingWarmRestarts: cycle length, multiplier, minimum)."""
from __future__ import annotations

import inspect
import re
import warnings
from typing import Any, Iterable, Optional, Protocol, Union

import torch

from ..errors import InputError
from .config import LR_SCHEDULERS, OPTIMIZERS, TrainConfig
from .schedule import Schedule, parse_schedule

_FUSED_OPTIMIZERS = ("AdamW", "Adam", "SGD", "Adagrad")
_NOT_OPTIONS = {"self", "params", "lr"}
Scalar = Union[bool, int, float]


def optimizer_class(name: str) -> type:
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
    cls = optimizer_class(name)
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


# ---------------------------------------------------------------------------- learning rate
class LearningRate(Protocol):
    """The learning rate over the optimizer steps of a run."""

    def finished(self, step: int) -> bool:
        """True once `step` steps are done and the schedule has nothing left."""

    def set_for_step(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Put the rate for step `step` (0-based, steps done) into the optimizer; return it."""

    def after_step(self) -> None:
        """Called after each optimizer step."""

    def state_dict(self) -> Optional[dict]: ...

    def load_state_dict(self, state: Optional[dict], start_step: int) -> None: ...


class A1111Rate:
    """A1111's `rate:step` schedule string, set before every step."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def finished(self, step: int) -> bool:
        return self.schedule.value_at(step) is None

    def set_for_step(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        rate = self.schedule.value_at(step)
        for group in optimizer.param_groups:
            group["lr"] = rate
        return float(rate)

    def after_step(self) -> None:
        pass

    def state_dict(self) -> Optional[dict]:
        return None  # a pure function of the step

    def load_state_dict(self, state: Optional[dict], start_step: int) -> None:
        pass


class SchedulerRate:
    """A torch LR scheduler over the run's steps; its state goes into the .optim file."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler, total_steps: int):
        self.scheduler, self.total_steps = scheduler, total_steps

    def finished(self, step: int) -> bool:
        return step >= self.total_steps

    def set_for_step(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        return float(optimizer.param_groups[0]["lr"])

    def after_step(self) -> None:
        self.scheduler.step()

    def state_dict(self) -> Optional[dict]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Optional[dict], start_step: int) -> None:
        """The saved state, or (from a file without one) the schedule replayed up to `start_step`."""
        if state is not None:
            self.scheduler.load_state_dict({k: v for k, v in state.items() if k != "kind"})
            # A scheduler's state does not hold the optimizer's rate: put the step's rate back.
            for group, rate in zip(self.scheduler.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = rate
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
            for _ in range(start_step):
                self.scheduler.step()


def learning_rate(config: TrainConfig, optimizer: torch.optim.Optimizer, start_step: int) -> LearningRate:
    """The run's learning rate. The optimizer must have been made with `base_rate(config, start)`."""
    if config.lr_scheduler == "a1111":
        return A1111Rate(parse_schedule(config.learning_rate, config.steps, start_step, "learning_rate"))
    return SchedulerRate(make_scheduler(config, optimizer), config.steps)


def base_rate(config: TrainConfig, start_step: int) -> float:
    """The rate the optimizer is made with (a scheduler scales it from there)."""
    if config.lr_scheduler == "a1111":
        schedule = parse_schedule(config.learning_rate, config.steps, start_step, "learning_rate")
        return float(schedule.value_at(start_step))
    return plain_rate(config.learning_rate)


def plain_rate(text: str) -> float:
    """A scheduler's peak rate: one positive number (schedule strings are for lr_scheduler a1111)."""
    try:
        rate = float(str(text).strip())
    except ValueError:
        rate = -1.0
    if not rate > 0:
        raise InputError("learning_rate", f"{text!r}: with a scheduler other than a1111 give one positive number "
                                          "(the peak rate), e.g. 0.0001")
    return rate


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The torch scheduler for `config.lr_scheduler` over `config.steps` optimizer steps."""
    from diffusers.optimization import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    check_scheduler(config)
    warmup, steps = int(config.warmup_steps), int(config.steps)
    if config.lr_scheduler == "constant_with_warmup":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    if config.lr_scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, steps)
    if config.lr_scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    cycle = int(config.restart_cycle_steps) or max(1, steps - warmup)
    restarts = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cycle, T_mult=int(config.restart_cycle_mult), eta_min=float(config.min_learning_rate))
    if warmup == 0:
        return restarts
    ramp = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: step / warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, restarts], milestones=[warmup])


def check_scheduler(config: TrainConfig) -> None:
    """The scheduler's settings, checked without an optimizer (for validation before any work)."""
    if config.lr_scheduler not in LR_SCHEDULERS:
        raise InputError("lr_scheduler", f"{config.lr_scheduler!r} is not one of {', '.join(LR_SCHEDULERS)}")
    if config.lr_scheduler == "a1111":
        return
    plain_rate(config.learning_rate)
    if not 0 <= config.warmup_steps < config.steps:
        raise InputError("warmup_steps", f"must be from 0 to steps - 1 ({config.steps - 1}), got {config.warmup_steps}")
    if config.min_learning_rate < 0 or config.min_learning_rate >= plain_rate(config.learning_rate):
        raise InputError("min_learning_rate", f"must be at least 0 and below learning_rate, got "
                                              f"{config.min_learning_rate}")
    if config.restart_cycle_steps < 0 or config.restart_cycle_mult < 1:
        raise InputError("restart_cycle_steps", "the cycle length must be 0 (the whole run) or more, and the "
                                                "multiplier 1 or more")
