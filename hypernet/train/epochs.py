"""How many epochs a run's `steps` make (EpochFigures): the pictures trained on, the images one
optimizer step sees, and the steps one epoch takes, as the batch plan counts them. Advice given in
steps ("10,000-20,000 steps at 5e-6") only means something against the set's size: these figures
say what `steps` means for this set (docs/training-guide.md, Steps and epochs)."""
from __future__ import annotations

from dataclasses import dataclass

from .batches import BatchPlan


@dataclass(frozen=True)
class EpochFigures:
    """What `steps` means for this set. `pictures` are the images trained on: after the held-out
    split, each kohya repeat counted as a picture (the dataset nodes list a picture once per
    repeat). `global_batch` and `accumulation` are the ones the batch plan uses (the settings, cut
    down where the set is too small for them); `global_batch` is batch_size x processes."""

    pictures: int
    held_out: int  # validation pictures (split off or connected), not trained on
    global_batch: int
    accumulation: int
    processes: int
    steps_per_epoch: int
    steps: int  # the run's `steps`
    start_step: int  # where a resumed run continues from (0 for a new one)

    @property
    def images_per_step(self) -> int:
        """Images one optimizer step sees: batch x accumulation x processes."""
        return self.global_batch * self.accumulation

    @property
    def epochs(self) -> float:
        """Epochs that `steps` make, from step 0."""
        return self.steps / self.steps_per_epoch

    @property
    def epochs_to_train(self) -> float:
        """Epochs of the steps still to train (all of them for a new run)."""
        return (self.steps - self.start_step) / self.steps_per_epoch

    def line(self) -> str:
        """The figures in one line, as the node and the CLI show them before training starts."""
        held = f" ({self.held_out} held out for validation)" if self.held_out else ""
        text = (f"{_count(self.pictures, 'picture')}{held}; {_count(self.images_per_step, 'image')} per step "
                f"({self._product()}); {_count(self.steps_per_epoch, 'step')} per epoch; "
                f"{self.steps} steps = {_epochs(self.epochs)} epochs")
        if self.start_step:
            text += (f"; from step {self.start_step}, {self.steps - self.start_step} steps to train = "
                     f"{_epochs(self.epochs_to_train)} epochs")
        return text

    def _product(self) -> str:
        """batch x accumulation x processes (a batch the set cut below one image per process is shown whole)."""
        if self.processes == 1:
            return f"batch {self.global_batch} x accumulation {self.accumulation}"
        if self.global_batch % self.processes:
            return f"batch {self.global_batch} shared by {self.processes} processes x accumulation {self.accumulation}"
        return (f"batch {self.global_batch // self.processes} x accumulation {self.accumulation} x "
                f"{self.processes} processes")


def epoch_figures(plan: BatchPlan, processes: int, held_out: int, steps: int, start_step: int = 0) -> EpochFigures:
    """The figures of a run that draws its batches from `plan` (built over the global batch:
    batch_size x `processes`), with `held_out` validation pictures, trained to `steps`."""
    return EpochFigures(pictures=plan.count, held_out=int(held_out), global_batch=plan.batch_size,
                        accumulation=plan.accumulation, processes=max(1, int(processes)),
                        steps_per_epoch=plan.steps_per_epoch, steps=int(steps), start_step=int(start_step))


def _epochs(value: float) -> str:
    """Three significant digits below 100 (0.04, 2.5, 33.3), whole epochs from 100 up (1,250)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _count(number: int, noun: str) -> str:
    """'1 image', '12 images'."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
