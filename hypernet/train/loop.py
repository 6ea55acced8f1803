"""The one training loop (A1111 parity), written against the TrainingBackend protocol.

Per optimizer step (hypernet-spec §4): set the scheduled learning rate; for each of the
`gradient_accumulation` micro-batches draw t ~ U{0..T-1} and eps ~ N(0, I), q-sample
x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps with the model's alphas_cumprod, and back-propagate
MSE(prediction, eps or v) / accumulation (weighted by the PNG alpha if asked); then clip
(value or norm, scheduled), step, zero the gradients. `step` counts optimizer steps done,
so `name-500.pt` holds step 500 (A1111 saves it as 499).

Differences from A1111, all deliberate: every random draw derives from (seed, micro-batch
number), which makes resume exact; NaN/inf stops the run instead of being saved; the
optimizer state is always saved; VAE/CLIP work happens once, not per step."""
from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..files import atomic_path, safe_join
from ..sd.sampling import sample
from .backend import TrainingBackend
from .checkpoint import load_resume_state, restore_optimizer, save_checkpoint
from .csvlog import LossCSV
from .dataset import BatchPlan, TrainingExample
from .latents import LatentCache, TextCache
from .prompts import PromptSource
from .rng import derive_seed, generator
from .schedule import parse_schedule

logger = logging.getLogger(__name__)

OPTIMIZERS = ("AdamW", "Adam", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta")
CLIP_MODES = ("disabled", "value", "norm")
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
MAX_SKIPPED_FP16_STEPS = 20
_FUSED_OPTIMIZERS = ("AdamW", "Adam", "SGD", "Adagrad")
_NAME = re.compile(r"^[\w][\w .\-]*$")


@dataclass
class TrainConfig:
    """Everything the Train Hypernet node exposes, with A1111's defaults."""

    name: str
    steps: int
    templates: Sequence[str] = ("[filewords]",)
    learning_rate: str = "0.00001"
    batch_size: int = 1
    gradient_accumulation: int = 1
    optimizer: str = "AdamW"
    clip_grad_mode: str = "disabled"
    clip_grad_value: str = "0.1"
    seed: int = 0
    shuffle_tags: bool = False
    tag_dropout: float = 0.0
    latent_sampling: str = "once"
    use_alpha_weight: bool = False
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    save_every: int = 0
    preview_every: int = 0
    preview_prompt: str = ""
    preview_negative: str = ""
    preview_seed: int = 0
    preview_steps: int = 20
    preview_cfg: float = 7.0  # previews: euler, "normal" schedule, negative prompt below
    csv_every: int = 1
    offload_encoders: bool = True
    log_dir: Optional[Path] = None  # periodic saves, previews, CSV; None = none of them
    final_path: Optional[Path] = None  # where the finished network goes; None = not saved


@dataclass
class TrainResult:
    """What a run produced."""

    hypernetwork: Any
    losses: list[float] = field(default_factory=list)  # one per optimizer step of this run
    learning_rates: list[float] = field(default_factory=list)
    first_step: int = 1
    final_path: Optional[Path] = None
    saved_paths: list[Path] = field(default_factory=list)
    previews: list[torch.Tensor] = field(default_factory=list)
    preview_paths: list[Path] = field(default_factory=list)
    csv_path: Optional[Path] = None
    interrupted: bool = False
    resumed_optimizer: bool = False
    seconds: float = 0.0


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN/inf; no file with the bad weights was written."""

    def __init__(self, message: str, step: int, last_good_path: Optional[Path]):
        super().__init__(message)
        self.step, self.last_good_path = step, last_good_path


class TrainHooks:
    """Host callbacks; the node maps them to ComfyUI's ProgressBar, interrupt and events."""

    def should_stop(self) -> bool:
        """True when the user asked to stop (checked once per step, before anything raises)."""
        return False

    def on_step(self, step: int, total: int, loss: float, learn_rate: float) -> None:
        """Called after every optimizer step (may raise the host's interrupt)."""

    def is_interrupt(self, exc: BaseException) -> bool:
        """True for the host's interrupt exception. ComfyUI raises it from inside any model
        call (its ops check the flag on every layer), so it can arrive mid-step."""
        return isinstance(exc, KeyboardInterrupt)

    def on_preview(self, step: int, image: torch.Tensor) -> None:
        """Called with every preview image [1,H,W,3]."""


class _SamplingView:
    """What hypernet/models/sampling.sample() needs from a model, over a training backend whose
    latents are already scaled (so the scale factor is 1)."""

    latent_scale_factor = 1.0

    def __init__(self, backend: TrainingBackend, schedule):
        self.alphas_cumprod, self.prediction_type = schedule.alphas_cumprod, schedule.prediction_type
        self.load_device, self.apply_model = backend.device, backend.predict


def validate_name(name: str) -> str:
    """A network name usable as a file name: letters, digits, space, '.', '_', '-'."""
    name = str(name).strip()
    if not _NAME.match(name):
        raise ValueError(f"name {name!r}: use letters, digits, spaces, '.', '_' or '-' "
                         "(it becomes the file name)")
    return name


def make_optimizer(name: str, parameters, learn_rate: float) -> torch.optim.Optimizer:
    """torch.optim.<name>(params, lr) with torch's default hyperparameters, as A1111 does.

    Where torch has a fused kernel for the optimizer on this device it is used: same update
    rule in one pass over the weights (about 8x faster for AdamW on a CPU, which matters with
    SD1's 22M hypernetwork parameters)."""
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or name in ("LBFGS", "SparseAdam"):
        raise ValueError(f"optimizer {name!r} is not a usable torch.optim optimizer; try one of {', '.join(OPTIMIZERS)}")
    parameters = list(parameters)
    if name in _FUSED_OPTIMIZERS:
        try:
            return cls(parameters, lr=learn_rate, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass  # no fused kernel for this device or dtype
    return cls(parameters, lr=learn_rate)


def _loss(prediction: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """MSE over all elements (every sample in a batch has the same size), alpha-weighted if asked."""
    error = (prediction.float() - target.float()) ** 2
    return (error * weight).mean() if weight is not None else error.mean()


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """No NaN or inf in any of `tensors` (one fused pass: a norm is non-finite iff an element is)."""
    tensors = [t.detach() for t in tensors]
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


def _grads_finite(parameters: Sequence[torch.Tensor]) -> bool:
    return _all_finite([p.grad for p in parameters if p.grad is not None])


def train_hypernetwork(backend: TrainingBackend, hypernetwork, examples: Sequence[TrainingExample],
                       config: TrainConfig, hooks: Optional[TrainHooks] = None) -> TrainResult:
    """Train `hypernetwork` in place from its `step` up to `config.steps`.

    If it was loaded from a file with a matching `.optim` (one we wrote), the optimizer state
    and the RNG stream continue exactly where that run stopped."""
    hooks = hooks or TrainHooks()
    name = validate_name(config.name)
    started = time.perf_counter()
    device = backend.device
    start_step = int(hypernetwork.step)
    if start_step >= config.steps:
        raise ValueError(f"steps: the hypernetwork is already trained for {start_step} steps; "
                         f"set steps above {start_step} to continue")
    resume = load_resume_state(hypernetwork)
    seed = int(resume["seed"]) if resume and "seed" in resume else int(config.seed)
    lr_schedule = parse_schedule(config.learning_rate, config.steps, start_step, "learning_rate")
    if config.clip_grad_mode not in CLIP_MODES:
        raise ValueError(f"clip_grad_mode must be one of {', '.join(CLIP_MODES)}")
    # Parsed from step 0: clipping holds its last value after its schedule ends, also when resuming past it.
    clip_schedule = (parse_schedule(config.clip_grad_value, config.steps, 0, "clip_grad_value")
                     if config.clip_grad_mode != "disabled" else None)
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    autocast_dtype = PRECISIONS[config.precision]

    plan = BatchPlan([e.size for e in examples], config.batch_size, config.gradient_accumulation, seed)
    accumulation = plan.accumulation
    prompts = PromptSource([e.caption for e in examples], config.templates, name, seed,
                           config.shuffle_tags, config.tag_dropout)
    schedule = backend.schedule()
    alphas = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)
    result = TrainResult(hypernetwork, first_step=start_step + 1)
    log_dir = Path(config.log_dir) if config.log_dir is not None else None
    csv_log = (LossCSV(safe_join(log_dir, "hypernetwork_loss.csv"), config.csv_every, plan.steps_per_epoch,
                       start_step) if log_dir is not None else None)
    if csv_log is not None and config.csv_every > 0:
        result.csv_path = csv_log.path

    with torch.no_grad():
        latents = LatentCache(examples, backend.encode_images, config.latent_sampling, seed, device,
                              config.use_alpha_weight)
        texts = TextCache(backend.encode_texts, device)
        texts.warm(prompts.distinct_fixed_prompts())
        preview_conds = None
        if config.preview_every > 0:
            preview_text = config.preview_prompt or prompts.prompt(0, 0)
            preview_conds = texts.batch([preview_text, config.preview_negative])

    hypernetwork.to(device)
    hypernetwork.train()
    hypernetwork.requires_grad_(True)
    parameters = list(hypernetwork.parameters())
    optimizer = make_optimizer(config.optimizer, parameters, lr_schedule.value_at(start_step))
    result.resumed_optimizer = restore_optimizer(optimizer, resume)
    if start_step:
        logger.info("%s: continuing from step %d, optimizer state %s", name, start_step,
                    "restored" if result.resumed_optimizer else "not found (starting fresh, as A1111 would)")
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype is torch.float16)
    if resume and resume.get("grad_scaler") and scaler.is_enabled():
        scaler.load_state_dict(resume["grad_scaler"])
    backend.attach(hypernetwork)
    use_dropout = any(isinstance(m, torch.nn.Dropout) for module in hypernetwork.modules()
                      for m in module.modules())
    last_good: Optional[Path] = Path(hypernetwork.filename) if getattr(hypernetwork, "filename", None) else None

    def save(path: Path) -> Path:
        if not _all_finite(parameters):
            # A huge learning rate can overflow the weights while loss and gradients were still finite.
            raise diverged("the weights", hypernetwork.step,
                           result.learning_rates[-1] if result.learning_rates else lr_schedule.held_value_at(start_step))
        extra = {"seed": seed, "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None}
        return save_checkpoint(hypernetwork, path, optimizer, extra)

    def periodic_save() -> None:
        nonlocal last_good
        if log_dir is None:
            return
        path = save(safe_join(log_dir, f"{name}-{hypernetwork.step}.pt"))
        result.saved_paths.append(path)
        last_good = path

    def final_save() -> None:
        if config.final_path is not None:
            result.final_path = save(Path(config.final_path))

    def preview() -> None:
        hypernetwork.eval()
        try:
            height, width = latents.means[0].shape[-2:]
            with torch.no_grad(), _autocast(device, autocast_dtype):
                latent = sample(_SamplingView(backend, schedule), torch.zeros(1, latents.means[0].shape[1], height, width),
                                preview_conds[:1], preview_conds[1:], seed=config.preview_seed,
                                steps=config.preview_steps, cfg=config.preview_cfg, sampler_name="euler",
                                scheduler="normal")
            image = backend.decode_latents(latent.float().to(device))
        finally:
            hypernetwork.train()
        result.previews.append(image)
        if log_dir is not None:
            result.preview_paths.append(save_png(image, safe_join(log_dir, f"images/{name}-{hypernetwork.step}.png")))
        hooks.on_preview(hypernetwork.step, image)

    def diverged(what: str, step: int, learn_rate: float) -> TrainingDiverged:
        where = f"the last good file is {last_good}" if last_good else "no file was written"
        return TrainingDiverged(
            f"Train Hypernet '{name}': {what} became NaN/inf at step {step} (learning rate {learn_rate:g}, "
            f"precision {config.precision}). Training stopped and nothing with NaN was saved; {where}. "
            f"Try a lower learning rate, precision fp32, or gradient clipping.", step, last_good)

    step = start_step
    skipped = 0
    with backend.session(config.gradient_checkpointing):
        if config.offload_encoders and not prompts.varies:
            backend.offload_encoders()  # the session brings them back when training ends
        try:
            while step < config.steps:
                learn_rate = lr_schedule.value_at(step)
                if learn_rate is None:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = learn_rate
                step_loss = 0.0
                for micro in range(accumulation):
                    number = step * accumulation + micro
                    indices = plan.batch(number)
                    cond = texts.batch([prompts.prompt(i, number) for i in indices])
                    x0 = latents.latents(indices, number)
                    weight = latents.loss_weights(indices)
                    draws = generator(seed, "noise", number)
                    timesteps = torch.randint(0, schedule.num_train_timesteps, (x0.shape[0],), generator=draws)
                    noise = torch.randn(x0.shape, generator=draws).to(device)
                    timesteps = timesteps.to(device)
                    a_t = alphas[timesteps].view(-1, 1, 1, 1)
                    x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise
                    target = (noise if schedule.prediction_type == "epsilon"
                              else a_t.sqrt() * noise - (1 - a_t).sqrt() * x0)
                    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else []) if use_dropout \
                        else contextlib.nullcontext()
                    with rng:
                        if use_dropout:
                            torch.manual_seed(derive_seed(seed, "dropout", number))
                        with _autocast(device, autocast_dtype):
                            prediction = backend.predict(x_t, timesteps, cond)
                        loss = _loss(prediction, target, weight) / accumulation
                        if not torch.isfinite(loss):
                            raise diverged("the loss", step + 1, learn_rate)
                        scaler.scale(loss).backward()
                    step_loss += float(loss.detach())
                if scaler.is_enabled():
                    scaler.unscale_(optimizer)
                if not _grads_finite(parameters):
                    if scaler.is_enabled() and skipped < MAX_SKIPPED_FP16_STEPS:
                        # fp16 overflow: GradScaler skips this update and lowers its scale; retry the step.
                        skipped += 1
                        logger.warning("%s: fp16 gradient overflow at step %d; GradScaler lowers its scale and retries",
                                       name, step + 1)
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad(set_to_none=True)
                        continue
                    raise diverged("the gradients", step + 1, learn_rate)
                skipped = 0
                if clip_schedule is not None:
                    clip_value = clip_schedule.held_value_at(step)
                    if config.clip_grad_mode == "value":
                        torch.nn.utils.clip_grad_value_(parameters, clip_value)
                    else:
                        torch.nn.utils.clip_grad_norm_(parameters, clip_value)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                hypernetwork.step = step
                result.losses.append(step_loss)
                result.learning_rates.append(learn_rate)
                if csv_log is not None:
                    csv_log.record(step, step_loss, learn_rate)
                if config.save_every > 0 and step % config.save_every == 0:
                    periodic_save()
                if preview_conds is not None and step % config.preview_every == 0:
                    preview()
                if hooks.should_stop():
                    result.interrupted = True
                    break
                hooks.on_step(step, config.steps, step_loss, learn_rate)
        except BaseException as exc:
            if not hooks.is_interrupt(exc):
                raise
            # Interrupted mid-step or from the progress hook: drop the unfinished step's
            # gradients and keep what the finished steps learned.
            optimizer.zero_grad(set_to_none=True)
            result.interrupted = True
            if step > start_step:
                _save_on_stop(periodic_save, final_save, config, step)
            raise
    if result.interrupted:
        _save_on_stop(periodic_save, final_save, config, step)
    else:
        final_save()
    hypernetwork.eval()
    hypernetwork.requires_grad_(False)
    result.seconds = time.perf_counter() - started
    return result


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Write IMAGE [1,H,W,3] as a PNG, atomically."""
    from PIL import Image

    array = (image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def _save_on_stop(periodic_save: Callable, final_save: Callable, config: TrainConfig, step: int) -> None:
    """On interrupt keep what was learned: a resumable step file (unless just written) and the final file."""
    if config.save_every <= 0 or step % config.save_every != 0:
        periodic_save()
    final_save()


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast to `dtype` (fp32 master weights stay fp32), or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
