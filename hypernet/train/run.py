"""One training run as an object whose methods read as the steps of the loop.

    prepare()         resume state, batch plan, prompts, cached latents and conditionings,
                      optimizer and gradient scaler, the patched model
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
from typing import Iterator, Optional, Sequence

import torch

from ..errors import InputError
from ..files import safe_join
from ..images import save_png
from ..network import Hypernetwork
from .backend import TrainingBackend
from .batches import BatchPlan, TrainingExample
from .config import PRECISIONS, TrainConfig, TrainHooks, TrainingDiverged, TrainResult, check_choices, validate_name
from .distributed import TrainingProcesses
from .latents import LatentCache, TextCache
from .logs import RunLogs, check_log_target
from .losses import diffusion_loss, draw_sample, min_snr_weights, noised_batch
from .optimizer import base_rate, check_scheduler, learning_rate, make_optimizer, optimizer_options
from .previews import PreviewGrid, preview_prompts, preview_seeds
from .prompts import PromptSource
from .resume_files import (
    load_resume_state,
    optimizer_state_path,
    read_optimizer_state,
    restore_optimizer,
    save_checkpoint,
)
from .rng import derive_seed, generator
from .schedule import parse_schedule
from .validation_loss import ValidationSettings, Validator, best_so_far, split_examples

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
                 processes: Optional[TrainingProcesses] = None):
        self.backend, self.network, self.examples, self.config = backend, hypernetwork, examples, config
        self.validation_examples = list(validation_examples)
        self.hooks = hooks or TrainHooks()
        # Under torchrun every process trains; only rank 0 writes, validates and previews.
        self.processes = processes
        self.writes = processes is None or processes.writes
        self.stop_requested = False
        self.name = validate_name(config.name)
        self.device = backend.device
        self.start_step = self.step = int(hypernetwork.step)
        if self.start_step >= config.steps:
            raise InputError("steps", f"the hypernetwork is already trained for {self.start_step} steps; "
                                      f"set steps above {self.start_step} to continue")
        check_choices(config)
        check_scheduler(config)
        check_log_target(config.log_to)
        preview_seeds(config)
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

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        """prepare, then optimizer steps until the schedule or `steps` ends or the user stops."""
        started = time.perf_counter()
        self.prepare()
        with self.backend.session(self.config.gradient_checkpointing):
            if self.config.offload_encoders and not self.prompts.varies:
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
        while self.step < self.config.steps and not self.rate.finished(self.step):
            learn_rate = self.rate.set_for_step(self.optimizer, self.step)
            loss = self.optimizer_step(learn_rate)
            if loss is None:
                continue  # fp16 overflow: the scaler lowered its scale; the same step again
            self.rate.after_step()
            self.after_step(loss, learn_rate)
            if self.stop_requested or (self.processes is None and self.hooks.should_stop()):
                self.result.interrupted = True
                break
            self._report_step(loss, learn_rate)

    def _report_step(self, loss: float, learn_rate: float) -> None:
        """The progress hook. With several processes an interrupt it raises becomes a stop that
        the next step's all-reduce shares, so no process is left waiting in a collective."""
        try:
            self.hooks.on_step(self.step, self.config.steps, loss, learn_rate)
        except BaseException as exc:
            if self.processes is None or not self.hooks.is_interrupt(exc):
                raise
            self.stop_requested = True

    # ------------------------------------------------------------------ prepare
    def prepare(self) -> None:
        """Everything before the first step: resume state, data, caches, optimizer, patch."""
        self.resume = load_resume_state(self.network)
        self.seed = int(self.resume["seed"]) if self.resume and "seed" in self.resume else int(self.config.seed)
        if not self.validation_examples and self.config.validation_split > 0:
            # Chosen from the run's seed (the stored one when resuming), so the same images stay out.
            self.examples, self.validation_examples = split_examples(self.examples, self.config.validation_split,
                                                                     self.seed)
        if self.processes is not None:
            self.processes.start(self.device)
        # batch_size is per process: a global micro-batch holds batch_size x processes images.
        world = self.processes.world_size if self.processes is not None else 1
        self.plan = BatchPlan([e.size for e in self.examples], self.config.batch_size * world,
                              self.config.gradient_accumulation, self.seed)
        self.prompts = PromptSource([e.caption for e in self.examples], self.config.templates, self.name, self.seed,
                                    self.config.shuffle_tags, self.config.tag_dropout, self.config.keep_tokens)
        self.schedule = self.backend.schedule()
        self.alphas = self.schedule.alphas_cumprod.to(device=self.device, dtype=torch.float32)
        self.logs = RunLogs(self.config, self.log_dir if self.writes else None, self.plan.steps_per_epoch,
                            self.start_step, bool(self.validation_examples))
        self.result.csv_path = self.logs.csv_path
        self._cache_inputs()
        self._prepare_optimizer()
        if self.processes is not None:
            state = [t for entry in self.optimizer.state.values() for t in entry.values() if torch.is_tensor(t)]
            self.processes.check_same_start(self.start_step, self.parameters + state, self.device)
        self.backend.attach(self.network)
        self.use_dropout = any(isinstance(m, torch.nn.Dropout) for module in self.network.modules()
                               for m in module.modules())

    def _cache_inputs(self) -> None:
        """Encode every image and every fixed prompt once (and the preview prompts)."""
        config = self.config
        with torch.no_grad():
            self.latents = LatentCache(self.examples, self.backend.encode_images, config.latent_sampling, self.seed,
                                       self.device, config.use_alpha_weight)
            self.texts = TextCache(self.backend.encode_texts, self.device)
            self.texts.warm(self.prompts.distinct_fixed_prompts())
            means = self.latents.means[0]
            self.previews = (PreviewGrid(self.backend, self.schedule, self.texts, config,
                                         preview_prompts(config, self.prompts.prompt(0, 0)), tuple(means.shape[1:]))
                             if config.preview_every > 0 and self.writes else None)
            self.validator = self._validator() if self.validation_examples and self.writes else None
            self.best_loss = self._previous_best()
        for example in [*self.examples, *self.validation_examples]:
            example.release_pixels()

    def _validator(self) -> Validator:
        config = self.config
        prompts = PromptSource([e.caption for e in self.validation_examples], config.templates, self.name, self.seed)
        settings = ValidationSettings(config.loss_type, config.min_snr_gamma, config.noise_offset,
                                      config.batch_size, config.use_alpha_weight)
        return Validator(self.validation_examples, self.backend, self.schedule, prompts, self.texts, self.seed,
                         settings)

    def _previous_best(self) -> Optional[float]:
        """A resumed run keeps the best validation loss its earlier steps reached (NAME-best.pt)."""
        if self.log_dir is None or not self.start_step:
            return None
        path = self.log_dir / f"{self.config.file_stem}-best.pt"
        best = read_optimizer_state(path) if path.is_file() else None
        if best and best.get("val_loss") is not None and int(best.get("step") or 0) <= self.start_step:
            self.result.best_step = int(best["step"])
            return float(best["val_loss"])
        return None

    def _prepare_optimizer(self) -> None:
        network = self.network
        network.to(self.device)
        network.train()
        network.requires_grad_(True)
        self.parameters = list(network.parameters())
        self.optimizer = make_optimizer(self.config.optimizer, self.parameters,
                                        self.first_rate, self.options)
        self.result.resumed_optimizer = restore_optimizer(self.optimizer, self.resume)
        self.rate = learning_rate(self.config, self.optimizer, self.start_step)
        if self.start_step:
            saved = self.resume.get("lr_scheduler") if self.resume else None
            self.rate.load_state_dict(saved if saved and saved.get("kind") == self.config.lr_scheduler else None,
                                      self.start_step)
        if self.start_step:
            logger.info("%s: continuing from step %d, optimizer state %s", self.name, self.start_step,
                        "restored" if self.result.resumed_optimizer else "not found (starting fresh, as A1111 would)")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype is torch.float16)
        if self.resume and self.resume.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(self.resume["grad_scaler"])

    # ------------------------------------------------------------------ one step
    def micro_step(self, number: int) -> torch.Tensor:
        """Forward and backward for this process's share of global micro-batch `number`; returns
        its loss (the share's part of the global mean, divided by the accumulation), on the device."""
        indices = self.plan.batch(number)
        share = self.processes.share(len(indices)) if self.processes is not None else range(len(indices))
        if not share:
            return torch.zeros((), device=self.device)
        mine = [indices[position] for position in share]
        cond = self.texts.batch([self.prompts.prompt(i, number) for i in mine])
        x0 = self.latents.latents(mine, number)
        timesteps, noise = self._draws(number, share, tuple(x0.shape[1:]))
        batch = noised_batch(x0, noise.to(self.device), timesteps.to(self.device), self.alphas,
                             self.schedule.prediction_type)
        with self._dropout_rng(number):
            with _autocast(self.device, self.autocast_dtype):
                prediction = self.backend.predict(batch.x_t, batch.timesteps, cond)
            loss = diffusion_loss(prediction, batch.target, self.latents.loss_weights(mine), self.config.loss_type,
                                  self._sample_weights(batch.timesteps), batch_size=len(indices))
            loss = loss / self.plan.accumulation
            self.scaler.scale(loss).backward()
        return loss.detach()

    def _draws(self, number: int, positions: Sequence[int], shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Timestep and noise of each sample from its own seed (run seed, micro-batch, position in
        the global micro-batch), so the draws do not depend on how many processes share it."""
        timesteps, noises = zip(*(draw_sample(generator(self.seed, "noise", number, position),
                                              self.schedule.num_train_timesteps, shape, self.config.noise_offset)
                                  for position in positions))
        return torch.cat(timesteps), torch.cat(noises)

    def _sample_weights(self, timesteps: torch.Tensor) -> Optional[torch.Tensor]:
        gamma = self.config.min_snr_gamma
        return min_snr_weights(self.alphas, timesteps, gamma, self.schedule.prediction_type) if gamma > 0 else None

    @contextlib.contextmanager
    def _dropout_rng(self, number: int) -> Iterator[None]:
        """Dropout masks drawn from a seed of (run seed, micro-batch), so resume replays them."""
        if not self.use_dropout:
            yield
            return
        rank = () if self.processes is None else (self.processes.rank,)  # each process its own masks
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(derive_seed(self.seed, "dropout", number, *rank))
            yield

    def optimizer_step(self, learn_rate: float) -> Optional[float]:
        """One optimizer step (the rate is already set); the step's loss, or None when an fp16
        overflow made the gradient scaler skip it (the caller runs the same step again)."""
        step_loss = self._accumulate()
        loss = float(step_loss)  # the step's one read of a device value (not one per micro-batch)
        if not math.isfinite(loss):
            raise self._diverged("the loss", self.step + 1, learn_rate)
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        if not _all_finite([p.grad for p in self.parameters if p.grad is not None]):
            if self.scaler.is_enabled() and self.skipped_fp16_steps < MAX_SKIPPED_FP16_STEPS:
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
        """The step's micro-batches, summed on the device; with several processes, then the one
        all-reduce of gradients, loss and stop/failure flags (distributed.py)."""
        numbers = range(self.step * self.plan.accumulation, (self.step + 1) * self.plan.accumulation)
        if self.processes is None:
            return torch.stack([self.micro_step(number) for number in numbers]).sum()
        error: Optional[BaseException] = None
        try:
            step_loss = torch.stack([self.micro_step(number) for number in numbers]).sum()
        except Exception as exc:  # noqa: BLE001 - shared below, then raised on this process
            error, step_loss = exc, torch.zeros((), device=self.device)
        stop = self.stop_requested or self.hooks.should_stop()
        agreed = self.processes.agree(self.parameters, step_loss, stop, error is not None)
        if error is not None:
            raise error
        if agreed.failed_ranks:
            raise RuntimeError(f"process(es) {list(agreed.failed_ranks)} failed at step {self.step + 1}; "
                               "every process stops (see that process's error)")
        self.stop_requested = agreed.stop
        return agreed.loss

    def _clip_gradients(self) -> None:
        if self.clip_schedule is None:
            return
        clip_value = self.clip_schedule.held_value_at(self.step)
        if self.config.clip_grad_mode == "value":
            torch.nn.utils.clip_grad_value_(self.parameters, clip_value)
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters, clip_value)

    def _update(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ after a step
    def after_step(self, loss: float, learn_rate: float) -> None:
        """Record the step, then write what is due: the CSV row, a step file, a preview."""
        self.result.losses.append(loss)
        self.result.learning_rates.append(learn_rate)
        due = self.validator is not None and (self.step % max(1, self.config.validation_every) == 0
                                              or self.step == self.config.steps)
        val_loss = self.validate() if due else None
        self.logs.step(self.step, loss, learn_rate, val_loss)
        if self.config.save_every > 0 and self.step % self.config.save_every == 0:
            self.save_periodic()
        if self.previews is not None and self.step % self.config.preview_every == 0:
            self.preview()

    def validate(self) -> float:
        """The validation loss now (eval mode, fixed draws); a new minimum writes NAME-best.pt."""
        self.network.eval()
        try:
            value = self.validator.evaluate(self.backend.predict, lambda: _autocast(self.device, self.autocast_dtype))
        finally:
            self.network.train()
        self.result.validation_steps.append(self.step)
        self.result.validation_losses.append(value)
        if best_so_far(self.best_loss, value):
            self.best_loss, self.result.best_step = value, self.step
            if self.log_dir is not None:
                path = safe_join(self.log_dir, f"{self.config.file_stem}-best.pt")
                self.result.best_path = self.save(path, {"val_loss": value})
        self.hooks.on_validation(self.step, value)
        return value

    def save(self, path: Path, extra: Optional[dict] = None) -> Path:
        """The network and its optimizer/RNG/scheduler state; refuses (TrainingDiverged) non-finite weights.

        Every process checks the weights (they are the same everywhere, so all stop together);
        only the one that writes writes."""
        if not _all_finite(self.parameters):
            # A huge learning rate can overflow the weights while loss and gradients were still finite.
            learn_rate = self.result.learning_rates[-1] if self.result.learning_rates else self.first_rate
            raise self._diverged("the weights", self.network.step, learn_rate)
        if not self.writes:
            return path  # rank 0 writes it; the others know its name for their messages
        scheduler = self.rate.state_dict()
        extra = {"seed": self.seed, "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                 "lr_scheduler": None if scheduler is None else {"kind": self.config.lr_scheduler, **scheduler},
                 **(extra or {})}
        written = save_checkpoint(self.network, path, self.optimizer, extra)
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
        self.network.eval()
        try:
            image = self.previews.render(lambda: _autocast(self.device, self.autocast_dtype))
        finally:
            self.network.train()
        self.result.previews.append(image)
        self.logs.preview(self.network.step, image)
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
        self.logs.close()
        if self.result.csv_path is not None and self.result.csv_path.is_file():
            self.hooks.on_file_written(self.result.csv_path)
        self.network.eval()
        self.network.requires_grad_(False)

    def _interrupted_mid_step(self) -> None:
        """The host's interrupt arrived inside a step: drop that step's gradients and keep what
        the finished steps learned."""
        self.optimizer.zero_grad(set_to_none=True)
        self.result.interrupted = True
        if self.step > self.start_step:
            self._save_on_stop()
        elif self.writes:
            self.hooks.on_stopped_early(self.step, [])

    def _save_on_stop(self) -> None:
        """A resumable step file (unless one was just written) and the final file."""
        if self.config.save_every <= 0 or self.step % self.config.save_every != 0:
            self.save_periodic()
        self.save_final()
        step_file = f"{self.config.file_stem}-{self.step}.pt"
        saved = [p for p in self.result.saved_paths[-1:] if p.name == step_file]
        if self.writes:
            self.hooks.on_stopped_early(self.step, saved + [p for p in [self.result.final_path] if p is not None])

    def _diverged(self, what: str, step: int, learn_rate: float) -> TrainingDiverged:
        where = f"the last good file is {self.last_good}" if self.last_good else "no file was written"
        return TrainingDiverged(
            f"'{self.name}': {what} became NaN/inf at step {step} (learning rate {learn_rate:g}, "
            f"precision {self.config.precision}). Training stopped and nothing with NaN was saved; {where}. "
            f"Try a lower learning rate, precision fp32, or gradient clipping.", step, self.last_good)


def train_hypernetwork(backend: TrainingBackend, hypernetwork: Hypernetwork, examples: Sequence[TrainingExample],
                       config: TrainConfig, hooks: Optional[TrainHooks] = None,
                       validation_examples: Sequence[TrainingExample] = (),
                       processes: Optional[TrainingProcesses] = None) -> TrainResult:
    """Train `hypernetwork` in place from its `step` up to `config.steps` (see TrainingRun)."""
    return TrainingRun(backend, hypernetwork, examples, config, hooks, validation_examples, processes).run()


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """No NaN or inf in any of `tensors` (one fused pass: a norm is non-finite iff an element is)."""
    tensors = [t.detach() for t in tensors]
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


def _autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager[None]:
    """Autocast to `dtype` (fp32 master weights stay fp32), or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
