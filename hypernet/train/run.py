"""One training run as an object whose methods read as the steps of the loop.

    prepare()         resume state, batch plan, prompts, cached latents and conditionings,
                      optimizer and gradient scaler, the patched model: one PreparedRun
                      (prepared_run.py) that the other steps read through `state`
    micro_step(n)     draw noise and timesteps for micro-batch n, predict, back-propagate
    optimizer_step()  the micro-batches of one step, the NaN guard, clipping, the update
    after_step()      record the loss and learning rate, validate, log, save, preview
    validate()        the mean loss over the held-out images (validation_loss.py), NAME-best.pt
    stop()            the final save (and on interrupt a resumable step file)

A1111's rules (docs/training.md): per optimizer step set the scheduled learning rate; for
each of the `gradient_accumulation` micro-batches draw t ~ U{0..T-1} and eps ~ N(0, I),
q-sample x_t with the model's alphas_cumprod and back-propagate the loss divided by the
accumulation; then clip (value or norm, scheduled), step, zero the gradients. `step` counts
optimizer steps done, so `name-500.pt` holds step 500 (A1111 saves it as 499).

Differences from A1111, all deliberate: every random draw derives from (seed, micro-batch
number), which makes resume exact; NaN/inf stops the run instead of being saved; the
optimizer state is always saved; VAE/CLIP work happens once, not per step.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import InputError
from ..files import safe_join
from ..images import save_png
from ..network import Hypernetwork
from .backend import TrainingBackend
from .batches import TrainingExample
from .config import PRECISIONS, TrainConfig, TrainHooks, TrainingDiverged, TrainResult, check_choices, validate_name
from .distributed import Processes, SingleProcess
from .host_copies import to_device
from .learning_rate import base_rate, check_scheduler, parse_schedule
from .logs import check_log_target
from .losses import diffusion_loss, min_snr_weights, noised_batch
from .optimizer import optimizer_options
from .prepared_run import PreparedRun, SweepEncodings, prepare_run
from .previews import preview_seeds
from .random_draws import micro_batch_draws, seeded_torch_rng
from .resume_files import optimizer_state_path, save_checkpoint
from .validation_loss import best_so_far

logger = logging.getLogger(__name__)

MAX_SKIPPED_FP16_STEPS = 20


class TrainingRun:
    """Trains `hypernetwork` in place from its `step` up to `config.steps`.

    If it was loaded from a file with a matching `.optim` (one we wrote), the optimizer state
    and the RNG stream continue exactly where that run stopped. Every check that needs no
    model runs in the constructor, so a bad value fails before anything is encoded."""

    def __init__(self, backend: TrainingBackend, hypernetwork: Hypernetwork, examples: Sequence[TrainingExample],
                 config: TrainConfig, hooks: Optional[TrainHooks] = None,
                 validation_examples: Sequence[TrainingExample] = (),
                 processes: Optional[Processes] = None, shared: Optional[SweepEncodings] = None):
        self.backend, self.network, self.config, self.shared = backend, hypernetwork, config, shared
        # As given: prepare() may hold some images out for validation (state.examples, state.validation_examples).
        self.given_examples, self.given_validation_examples = examples, list(validation_examples)
        self.hooks = hooks or TrainHooks()
        # Under torchrun every process trains; only rank 0 writes, validates and previews.
        self.processes: Processes = processes if processes is not None else SingleProcess()
        self.stop_requested = False  # a stop that the next step's all-reduce shares (several processes)
        self.name = validate_name(config.name)
        self.device = backend.device
        self.start_step = self.step = int(hypernetwork.step)
        check_before_work(config, self.start_step)
        self.first_rate = base_rate(config, self.start_step)
        self.options = optimizer_options(config)
        # Parsed from step 0: clipping holds its last value after its schedule ends, also when resuming past it.
        self.clip_schedule = (parse_schedule(config.clip_grad_value, config.steps, 0, "clip_grad_value")
                              if config.clip_grad_mode != "disabled" else None)
        self.autocast_dtype = PRECISIONS[config.precision]
        self.log_dir = Path(config.log_dir) if config.log_dir is not None else None
        self.result = TrainResult(hypernetwork, first_step=self.start_step + 1)
        filename = getattr(hypernetwork, "filename", None)
        self.last_good: Optional[Path] = Path(filename) if filename else None
        self.skipped_fp16_steps = 0
        self.prepared: Optional[PreparedRun] = None  # prepare() builds it

    @property
    def state(self) -> PreparedRun:
        """What prepare() built, for every method that steps, validates, saves or previews."""
        if self.prepared is None:
            raise RuntimeError(f"training run '{self.name}': call prepare() (run() does) before stepping, "
                               "validating, saving or previewing")
        return self.prepared

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        """prepare, then optimizer steps until the schedule or `steps` ends or the user stops."""
        started = time.perf_counter()
        self.prepare()
        with self.backend.session(self.config.gradient_checkpointing):
            if self.config.offload_encoders and not self.state.prompts.varies:
                self.backend.offload_encoders()  # the session brings them back when training ends
            try:
                self._steps()
            except BaseException as exc:
                if not self.hooks.is_interrupt(exc):
                    raise
                self._interrupted_mid_step()
                raise
        self.stop()
        self.result.seconds = time.perf_counter() - started
        return self.result

    def _steps(self) -> None:
        rate = self.state.rate
        while self.step < self.config.steps and not rate.finished(self.step):
            learn_rate = rate.set_for_step(self.state.optimizer, self.step)
            loss = self.optimizer_step(learn_rate)
            if loss is None:
                continue  # fp16 overflow: the scaler lowered its scale; the same step again
            rate.after_step()
            self.after_step(loss, learn_rate)
            if self.stop_requested or self.processes.stop_after_step(self.hooks.should_stop):
                self.result.interrupted = True
                break
            self._report_step(loss, learn_rate)

    def _report_step(self, loss: float, learn_rate: float) -> None:
        """The progress hook. With several processes an interrupt it raises becomes a stop that
        the next step's all-reduce shares, so no process is left waiting in a collective."""
        try:
            self.hooks.on_step(self.step, self.config.steps, loss, learn_rate)
        except BaseException as exc:
            if not (self.processes.shares_interrupts and self.hooks.is_interrupt(exc)):
                raise
            self.stop_requested = True

    # ------------------------------------------------------------------ prepare
    def prepare(self) -> PreparedRun:
        """Everything before the first step (prepared_run.py): resume state, data, caches, optimizer,
        patch. The steps then use it (`state`)."""
        self.prepared = prepare_run(self.backend, self.network, self.config, self.processes, self.given_examples,
                                    self.given_validation_examples, self.hooks, name=self.name, log_dir=self.log_dir,
                                    first_rate=self.first_rate, options=self.options, result=self.result,
                                    shared=self.shared)
        return self.prepared

    # ------------------------------------------------------------------ one step
    def micro_step(self, number: int) -> torch.Tensor:
        """Forward and backward for this process's share of global micro-batch `number`; returns
        its loss (the share's part of the global mean, divided by the accumulation), on the device."""
        state = self.state
        indices = state.plan.batch(number)
        share = self.processes.share(len(indices))
        if not share:
            return torch.zeros((), device=self.device)
        mine = [indices[position] for position in share]
        cond = state.texts.batch([state.prompts.prompt(i, number) for i in mine])
        x0 = state.latents.latents(mine, number)
        timesteps, noise = micro_batch_draws(state.seed, number, share, state.schedule.num_train_timesteps,
                                             tuple(x0.shape[1:]), self.config.noise_offset)
        batch = noised_batch(x0, to_device(noise, self.device), to_device(timesteps, self.device), state.alphas,
                             state.schedule.prediction_type)
        with self._dropout_rng(number):
            with _autocast(self.device, self.autocast_dtype):
                prediction = self.backend.predict(batch.x_t, batch.timesteps, cond)
            gamma = self.config.min_snr_gamma
            sample_weights = (min_snr_weights(state.alphas, batch.timesteps, gamma, state.schedule.prediction_type)
                              if gamma > 0 else None)
            loss = diffusion_loss(prediction, batch.target, state.latents.loss_weights(mine), self.config.loss_type,
                                  sample_weights, batch_size=len(indices))
            loss = loss / state.plan.accumulation
            state.scaler.scale(loss).backward()
        return loss.detach()

    def _dropout_rng(self, number: int) -> contextlib.AbstractContextManager[None]:
        """Dropout masks drawn from a seed of (run seed, micro-batch), so resume replays them; with
        several processes the rank is part of it (each process its own masks)."""
        if not self.state.use_dropout:
            return contextlib.nullcontext()
        return seeded_torch_rng(self.device, self.state.seed, "dropout", number, *self.processes.own_seed_labels)

    def optimizer_step(self, learn_rate: float) -> Optional[float]:
        """One optimizer step (the rate is already set); the step's loss, or None when an fp16
        overflow made the gradient scaler skip it (the caller runs the same step again)."""
        state = self.state
        step_loss = self._accumulate()
        if state.scaler.is_enabled():
            state.scaler.unscale_(state.optimizer)
        loss, gradients_finite = _read_step(step_loss, state.parameters)
        if not math.isfinite(loss):
            raise self._diverged("the loss", self.step + 1, learn_rate)
        if not gradients_finite:
            if state.scaler.is_enabled() and self.skipped_fp16_steps < MAX_SKIPPED_FP16_STEPS:
                self.skipped_fp16_steps += 1
                logger.warning("%s: fp16 gradient overflow at step %d; GradScaler lowers its scale and retries",
                               self.name, self.step + 1)
                self._update()
                return None
            raise self._diverged("the gradients", self.step + 1, learn_rate)
        self.skipped_fp16_steps = 0
        self._clip_gradients()
        self._update()
        self.step += 1
        self.network.step = self.step
        return loss

    def _accumulate(self) -> torch.Tensor:
        """The step's micro-batches, summed on the device and agreed on by the processes: with
        several, one all-reduce of gradients, loss and stop/failure flags (distributed.py)."""
        accumulation = self.state.plan.accumulation
        numbers = range(self.step * accumulation, (self.step + 1) * accumulation)
        agreed = self.processes.agree_on_step(
            lambda: torch.stack([self.micro_step(number) for number in numbers]).sum(), self.state.parameters,
            lambda: self.stop_requested or self.hooks.should_stop(), self.step + 1, self.device)
        self.stop_requested = agreed.stop
        return agreed.loss

    def _clip_gradients(self) -> None:
        if self.clip_schedule is None:
            return
        clip_value = self.clip_schedule.held_value_at(self.step)
        if self.config.clip_grad_mode == "value":
            torch.nn.utils.clip_grad_value_(self.state.parameters, clip_value)
        else:
            torch.nn.utils.clip_grad_norm_(self.state.parameters, clip_value)

    def _update(self) -> None:
        state = self.state
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ after a step
    def after_step(self, loss: float, learn_rate: float) -> None:
        """Record the step, then write what is due: the CSV row, a step file, a preview."""
        state = self.state
        self.result.losses.append(loss)
        self.result.learning_rates.append(learn_rate)
        due = state.validator is not None and (self.step % max(1, self.config.validation_every) == 0
                                               or self.step == self.config.steps)
        val_loss = self.validate() if due else None
        state.logs.step(self.step, loss, learn_rate, val_loss)
        if self.config.save_every > 0 and self.step % self.config.save_every == 0:
            self.save_periodic()
        if state.previews is not None and self.step % self.config.preview_every == 0:
            self.preview()

    def validate(self) -> float:
        """The validation loss now (eval mode, fixed draws); a new minimum writes NAME-best.pt."""
        state, validator = self.state, self.state.required_validator()
        self.network.eval()
        try:
            value = validator.evaluate(self.backend.predict, lambda: _autocast(self.device, self.autocast_dtype))
        finally:
            self.network.train()
        self.result.validation_steps.append(self.step)
        self.result.validation_losses.append(value)
        if best_so_far(state.best_loss, value):
            state.best_loss, self.result.best_step = value, self.step
            if self.log_dir is not None:
                path = safe_join(self.log_dir, f"{self.config.file_stem}-best.pt")
                self.result.best_path = self.save(path, {"val_loss": value})
        self.hooks.on_validation(self.step, value)
        return value

    def save(self, path: Path, extra: Optional[dict] = None) -> Path:
        """The network and its optimizer/RNG/scheduler state; refuses (TrainingDiverged) non-finite weights.

        Every process checks the weights (they are the same everywhere, so all stop together);
        only the one that writes writes."""
        state = self.state
        if not _all_finite(state.parameters):
            # A huge learning rate can overflow the weights while loss and gradients were still finite.
            learn_rate = self.result.learning_rates[-1] if self.result.learning_rates else self.first_rate
            raise self._diverged("the weights", self.network.step, learn_rate)
        if not self.processes.writes:
            return path  # rank 0 writes it; the others know its name for their messages
        extra = {**state.resume_fields(self.config.lr_scheduler), **(extra or {})}
        written = save_checkpoint(self.network, path, state.optimizer, extra)
        self.hooks.on_file_written(written)
        self.hooks.on_file_written(optimizer_state_path(written))
        return written

    def save_periodic(self) -> None:
        """`log_dir/NAME-STEP.pt` (+ .optim): a file to resume from or to try."""
        if self.log_dir is None:
            return
        path = self.save(safe_join(self.log_dir, f"{self.config.file_stem}-{self.network.step}.pt"))
        self.result.saved_paths.append(path)
        self.last_good = path

    def save_final(self) -> None:
        if self.config.final_path is not None:
            self.result.final_path = self.save(Path(self.config.final_path))

    def preview(self) -> None:
        """The preview grid (prompts x seeds) with the current weights (eval mode: no dropout)."""
        state, previews = self.state, self.state.required_previews()
        self.network.eval()
        try:
            image = previews.render(lambda: _autocast(self.device, self.autocast_dtype))
        finally:
            self.network.train()
        self.result.previews.append(image)
        state.logs.preview(self.network.step, image)
        if self.log_dir is not None:
            path = safe_join(self.log_dir, f"images/{self.config.file_stem}-{self.network.step}.png")
            self.result.preview_paths.append(save_png(image, path))
            self.hooks.on_file_written(path)
        self.hooks.on_preview(self.network.step, image)

    # ------------------------------------------------------------------ stopping
    def stop(self) -> None:
        """After the last step: the final save (plus a step file when the user stopped early)."""
        if self.result.interrupted:
            self._save_on_stop()
        else:
            self.save_final()
        self.state.logs.close()
        if self.result.csv_path is not None and self.result.csv_path.is_file():
            self.hooks.on_file_written(self.result.csv_path)
        self.network.eval()
        self.network.requires_grad_(False)

    def _interrupted_mid_step(self) -> None:
        """The host's interrupt arrived inside a step: drop that step's gradients and keep what
        the finished steps learned."""
        self.state.optimizer.zero_grad(set_to_none=True)
        self.result.interrupted = True
        if self.step > self.start_step:
            self._save_on_stop()
        elif self.processes.writes:
            self.hooks.on_stopped_early(self.step, [])

    def _save_on_stop(self) -> None:
        """A resumable step file (unless one was just written) and the final file."""
        if self.config.save_every <= 0 or self.step % self.config.save_every != 0:
            self.save_periodic()
        self.save_final()
        step_file = f"{self.config.file_stem}-{self.step}.pt"
        saved = [p for p in self.result.saved_paths[-1:] if p.name == step_file]
        if self.processes.writes:
            self.hooks.on_stopped_early(self.step, saved + [p for p in [self.result.final_path] if p is not None])

    def _diverged(self, what: str, step: int, learn_rate: float) -> TrainingDiverged:
        return diverged(self.config.file_stem, what, step, learn_rate, self.config.precision, self.last_good)


def diverged(name: str, what: str, step: int, learn_rate: float, precision: str,
             last_good: Optional[Path]) -> TrainingDiverged:
    """The error for `what` (the loss, the gradients, the weights) turning NaN/inf at `step` of run `name`."""
    where = f"the last good file is {last_good}" if last_good else "no file was written"
    return TrainingDiverged(
        f"'{name}': {what} became NaN/inf at step {step} (learning rate {learn_rate:g}, precision {precision}). "
        f"Training stopped and nothing with NaN was saved; {where}. "
        "Try a lower learning rate, precision fp32, or gradient clipping.", step, last_good)


def check_before_work(config: TrainConfig, start_step: int) -> None:
    """Every check of `config` that needs no model, for a network trained up to `start_step`."""
    if start_step >= config.steps:
        raise InputError("steps", f"the hypernetwork is already trained for {start_step} steps; "
                                  f"set steps above {start_step} to continue")
    check_choices(config)
    check_scheduler(config)
    check_log_target(config.log_to)
    preview_seeds(config)


def train_hypernetwork(backend: TrainingBackend, hypernetwork: Hypernetwork, examples: Sequence[TrainingExample],
                       config: TrainConfig, hooks: Optional[TrainHooks] = None,
                       validation_examples: Sequence[TrainingExample] = (),
                       processes: Optional[Processes] = None) -> TrainResult:
    """Train `hypernetwork` in place from its `step` up to `config.steps` (see TrainingRun);
    without `processes` (a torchrun launch) this process trains alone (SingleProcess)."""
    return TrainingRun(backend, hypernetwork, examples, config, hooks, validation_examples, processes).run()


def _read_step(step_loss: torch.Tensor, parameters: Sequence[torch.nn.Parameter]) -> tuple[float, bool]:
    """The step's loss and whether every gradient is finite, in the step's one read of device values
    (not one per micro-batch: each read makes the host wait for the device)."""
    flag = _finite_flag([p.grad for p in parameters if p.grad is not None], step_loss.device)
    loss, finite = torch.stack([step_loss.detach().float().reshape(()), flag]).tolist()
    return loss, bool(finite)


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """No NaN or inf in any of `tensors`."""
    return bool(_finite_flag(tensors, torch.device("cpu")))


def _finite_flag(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """1.0 (on the tensors' device; `device` when there are none) when no element of `tensors` is
    NaN or inf, else 0.0, without reading it (one fused pass: a norm is non-finite iff an element is)."""
    tensors = [t.detach() for t in tensors]
    if not tensors:
        return torch.ones((), device=device)
    return torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all().float()


def _autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager[None]:
    """Autocast to `dtype` (fp32 master weights stay fp32), or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
