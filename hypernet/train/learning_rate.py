"""The learning rate, and A1111's schedule strings (also the gradient-clipping value's).

A1111's schedule strings (docs/training.md): comma-separated `value:step` pairs, each meaning
"use `value` while the step counter is below `step`". A bare `value` or `value:-1` runs to the
last step and ends the list; a step above the last step is clamped to it and ends the list.
Pairs that end at or before the step training resumes from are skipped. When the last pair's
end is reached, training is finished.

The learning rate follows either such a string (lr_scheduler `a1111`, the default) or one of
torch's / diffusers' schedulers with a warmup: constant_with_warmup, linear and cosine
(diffusers' definitions) and cosine_with_restarts (torch's CosineAnnealingWarmRestarts: cycle
length, multiplier, minimum)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Protocol

import torch

from ..errors import InputError
from ..input_values import check_choice
from .config import LR_SCHEDULERS, TrainConfig


class ScheduleError(InputError):
    """A schedule string that cannot be parsed; `input_name` is the field it came from."""


@dataclass(frozen=True)
class Schedule:
    """Parsed `value:step` segments: `segments[i] = (value, end_step)`, ends increasing."""

    segments: tuple[tuple[float, int], ...]
    text: str

    @property
    def end_step(self) -> int:
        """The step at which training is finished (the last segment's end)."""
        return self.segments[-1][1]

    def value_at(self, step: int) -> float | None:
        """The value in force while `step` optimizer steps are done, or None once finished."""
        for value, end in self.segments:
            if step < end:
                return value
        return None

    def held_value_at(self, step: int) -> float:
        """The value in force at `step`, the last value once the schedule is exhausted: how
        A1111 uses the gradient-clipping schedule (its end does not stop training or clipping)."""
        value = self.value_at(step)
        return self.segments[-1][0] if value is None else value

    def finished(self, step: int) -> bool:
        """True once `step` has reached the end of the last segment."""
        return step >= self.end_step


def parse_schedule(text: str, max_steps: int, start_step: int = 0, what: str = "learning_rate") -> Schedule:
    """Parse an A1111 schedule string for a run of `max_steps` resumed at `start_step`.

    `what` is the input the string came from ("learning_rate", "clip_grad_value")."""
    if max_steps < 1:
        raise ScheduleError("steps", f"must be at least 1, got {max_steps}")
    segments: list[tuple[float, int]] = []
    try:
        for pair in str(text).split(","):
            if not pair.strip():
                continue
            parts = pair.split(":")
            if len(parts) > 2:
                raise ValueError(f"too many ':' in {pair.strip()!r}")
            value = float(parts[0])
            if not value > 0 or value == float("inf"):
                raise ValueError(f"{parts[0].strip()!r} is not a positive number")
            if len(parts) == 1 or int(parts[1]) == -1:
                segments.append((value, max_steps))
                break
            end = int(parts[1])
            if end > start_step:
                if segments and end <= segments[-1][1]:
                    raise ValueError(f"steps must increase ({end} after {segments[-1][1]})")
                segments.append((value, min(end, max_steps)))
                if end >= max_steps:
                    break
    except ValueError as exc:
        raise ScheduleError(what,
            f"invalid {what} schedule {text!r}: {exc}. Use e.g. '0.00001' or "
            f"'5e-5:100, 5e-6:1500, 5e-7' (value:step pairs, a bare value runs to the end)") from None
    if not segments:
        raise ScheduleError(what,
            f"{what} schedule {text!r} has no segment after step {start_step}: "
            f"nothing to train (add a bare value to run to step {max_steps})")
    return Schedule(tuple(segments), str(text))


# ---------------------------------------------------------------------------- the rate over a run
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
        if rate is None:  # the run loop asks finished() first
            raise RuntimeError(f"learning_rate schedule {self.schedule.text!r} ends at step "
                               f"{self.schedule.end_step}: there is no rate for step {step}")
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


def make_learning_rate(config: TrainConfig, optimizer: torch.optim.Optimizer, start_step: int) -> LearningRate:
    """The run's learning rate. The optimizer must have been made with `base_rate(config, start)`."""
    if config.lr_scheduler == "a1111":
        return A1111Rate(parse_schedule(config.learning_rate, config.steps, start_step, "learning_rate"))
    return SchedulerRate(make_scheduler(config, optimizer), config.steps)


def base_rate(config: TrainConfig, start_step: int) -> float:
    """The rate the optimizer is made with (a scheduler scales it from there)."""
    if config.lr_scheduler == "a1111":
        schedule = parse_schedule(config.learning_rate, config.steps, start_step, "learning_rate")
        rate = schedule.value_at(start_step)
        if rate is None:  # only when start_step >= steps, which TrainingRun refuses before asking
            raise InputError("steps", f"the learning_rate schedule ends at step {schedule.end_step}: "
                                      f"there is no rate for step {start_step}")
        return float(rate)
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
    check_choice("lr_scheduler", config.lr_scheduler, LR_SCHEDULERS)
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
