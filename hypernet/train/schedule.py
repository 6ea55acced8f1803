"""A1111's schedule strings for the learning rate and the gradient-clipping value.

Syntax (docs/training.md): comma-separated `value:step` pairs, each meaning "use `value`
while the step counter is below `step`". A bare `value` or `value:-1` runs to the last
step and ends the list; a step above the last step is clamped to it and ends the list.
Pairs that end at or before the step training resumes from are skipped. When the last
pair's end is reached, training is finished.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


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
