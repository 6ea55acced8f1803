"""What a training run builds before its first step (PreparedRun), and prepare_run(), which builds
it in this order: the resume state and seed, the held-out split, the process group, the batch plan
and prompts, the noise schedule, the logs, the cached latents and conditionings (from the
persistent cache where it has them; and the preview and validation helpers that use them), the
optimizer and its learning rate, the patched model.

The runs of a sweep (several specs on one picture set) share one SweepEncodings: the first run
encodes the pictures and prompts, the others find them there (EncodedSet), so the VAE sees each
picture once per sweep."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..network import Hypernetwork
from .backend import NoiseSchedule, TrainingBackend
from .batches import BatchPlan, TrainingExample
from .config import PRECISIONS, TrainConfig, TrainHooks, TrainResult
from .distributed import Processes
from .encoding_cache import CacheFigures, EncodingCache, open_cache
from .epochs import epoch_figures
from .latents import LatentCache, TextCache
from .learning_rate import LearningRate, make_learning_rate
from .logs import RunLogs
from .optimizer import make_optimizer
from .previews import PreviewGrid, preview_prompts
from .prompts import PromptSource
from .resume_files import load_resume_state, read_optimizer_state, restore_optimizer
from .validation_loss import ValidationSettings, Validator, split_examples

logger = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """Everything a TrainingRun builds before its first step. Only `best_loss` changes afterwards."""

    seed: int  # the run's seed: the stored one when resuming
    examples: Sequence[TrainingExample]  # the images trained on (held-out ones excluded)
    validation_examples: list[TrainingExample]  # the held-out images: given, or split off by the seed
    plan: BatchPlan
    prompts: PromptSource
    schedule: NoiseSchedule
    alphas: torch.Tensor  # the schedule's alphas_cumprod on the device, fp32
    logs: RunLogs
    latents: LatentCache
    texts: TextCache
    previews: Optional[PreviewGrid]  # None when previews are off or this process does not write
    validator: Optional[Validator]  # None without held-out images or when this process does not write
    best_loss: Optional[float]  # the lowest validation loss so far, a resumed run's earlier steps included
    parameters: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    rate: LearningRate
    scaler: torch.amp.GradScaler
    use_dropout: bool  # the network has dropout layers (their masks get seeds of their own)
    ready_at: float  # time.perf_counter() when preparing ended: the steps' wall time starts here

    def required_validator(self) -> Validator:
        """The validator, for a run that validates; anything else is a caller's mistake."""
        if self.validator is None:
            raise RuntimeError("this run does not validate: it has no held-out images, or this process does not write")
        return self.validator

    def required_previews(self) -> PreviewGrid:
        """The preview grid, for a run that previews; anything else is a caller's mistake."""
        if self.previews is None:
            raise RuntimeError("this run makes no previews: preview_every is 0, or this process does not write")
        return self.previews

    def resume_fields(self, lr_scheduler: str) -> dict[str, Any]:
        """What a saved network's .optim holds beyond the optimizer state so that the run resumes
        exactly: the seed, the gradient scaler's state, the `lr_scheduler`'s state with its kind."""
        scheduler = self.rate.state_dict()
        return {"seed": self.seed, "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "lr_scheduler": None if scheduler is None else {"kind": lr_scheduler, **scheduler}}


@dataclass
class EncodedSet:
    """A run's pictures and prompts as the model sees them: the latents of the images trained on,
    the text cache (the fixed prompts in it), and the validator with the held-out latents; with
    what decided them, so that only a run with the same settings, seed, pictures and backend
    takes them over."""

    backend: TrainingBackend
    settings: TrainConfig  # the run's config less its own files (run_name, log_dir, final_path)
    seed: int
    examples: Sequence[TrainingExample]
    validation_examples: Sequence[TrainingExample]
    latents: LatentCache
    texts: TextCache
    validator: Optional[Validator]

    def serves(self, backend: TrainingBackend, config: TrainConfig, seed: int, examples: Sequence[TrainingExample],
               validation_examples: Sequence[TrainingExample]) -> bool:
        """Whether a run with these settings would encode exactly this (the very same example objects)."""
        return (backend is self.backend and _settings(config) == self.settings and seed == self.seed
                and _same_objects(examples, self.examples)
                and _same_objects(validation_examples, self.validation_examples))


class SweepEncodings:
    """What the runs of one sweep share: the EncodedSet the first run built (None before it).
    A later run with other settings builds its own and leaves this one in place."""

    def __init__(self) -> None:
        self.encoded: Optional[EncodedSet] = None


def _settings(config: TrainConfig) -> TrainConfig:
    return replace(config, run_name=None, log_dir=None, final_path=None)


def _same_objects(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


@dataclass(frozen=True)
class _RunData:
    seed: int
    resume: Optional[dict]
    examples: Sequence[TrainingExample]
    validation_examples: list[TrainingExample]
    plan: BatchPlan
    prompts: PromptSource


def prepare_run(backend: TrainingBackend, network: Hypernetwork, config: TrainConfig, processes: Processes,
                examples: Sequence[TrainingExample], validation_examples: Sequence[TrainingExample],
                hooks: TrainHooks, *, name: str, log_dir: Optional[Path], first_rate: float, options: dict[str, Any],
                result: TrainResult, shared: Optional[SweepEncodings] = None) -> PreparedRun:
    """Everything before the first step of `network`'s run (TrainingRun's checked `name`, `log_dir`,
    first learning rate and optimizer `options`). Records in `result` the epoch figures, the CSV
    path, a resumed run's best step and whether the optimizer state was restored; tells `hooks`
    the epoch figures before anything is encoded. With `shared` (a sweep's), the latents, texts
    and validator come from there when an earlier run encoded them with the same settings."""
    start_step = int(network.step)
    data = _data(network, config, processes, backend.device, examples, validation_examples, name)
    result.epochs = epoch_figures(data.plan, processes.world_size, len(data.validation_examples), config.steps,
                                  start_step)
    if processes.writes:
        hooks.on_epochs(result.epochs)
    schedule = backend.schedule()
    alphas = schedule.alphas_cumprod.to(device=backend.device, dtype=torch.float32)
    logs = RunLogs(config, log_dir if processes.writes else None, data.plan.steps_per_epoch, start_step,
                   bool(data.validation_examples))
    result.csv_path = logs.csv_path
    with torch.no_grad():
        encoded, cache = _encoded_set(backend, config, schedule, data, name, processes, shared)
        latents, texts, validator = encoded.latents, encoded.texts, encoded.validator
        means = latents.means[0]
        previews = (PreviewGrid(backend, schedule, texts, config, preview_prompts(config, data.prompts.prompt(0, 0)),
                                tuple(means.shape[1:]))
                    if config.preview_every > 0 and processes.writes else None)
        best_loss = _previous_best(config, log_dir, start_step, result)
    result.cache = _cache_figures(cache)
    for example in [*data.examples, *data.validation_examples]:
        example.release_pixels()
    parameters, optimizer, rate, scaler = _optimization(network, config, backend.device, start_step, data.resume,
                                                        first_rate, options, result, name,
                                                        uses_fp16=computes_in_fp16(config.precision, backend))
    state = [t for entry in optimizer.state.values() for t in entry.values() if torch.is_tensor(t)]
    processes.check_same_start(start_step, parameters + state, backend.device)
    backend.attach(network)
    use_dropout = any(isinstance(m, torch.nn.Dropout) for module in network.modules() for m in module.modules())
    return PreparedRun(data.seed, data.examples, data.validation_examples, data.plan, data.prompts, schedule, alphas,
                       logs, latents, texts, previews, validator, best_loss, parameters, optimizer, rate, scaler,
                       use_dropout, time.perf_counter())


def _encoded_set(backend: TrainingBackend, config: TrainConfig, schedule: NoiseSchedule, data: "_RunData", name: str,
                 processes: Processes, shared: Optional[SweepEncodings]
                 ) -> tuple[EncodedSet, Optional[EncodingCache]]:
    """The shared EncodedSet when it serves this run (and no persistent cache: nothing was read),
    else one encoded now, through the persistent cache when there is one, and shared from now on.
    Only the process that writes validates, so only it has a validator."""
    if shared is not None and shared.encoded is not None and shared.encoded.serves(
            backend, config, data.seed, data.examples, data.validation_examples):
        shared.encoded.texts.warm(data.prompts.distinct_fixed_prompts())  # the same prompts: nothing to encode
        return shared.encoded, None
    cache = open_cache(backend, config.cache_dir)
    latents = LatentCache(data.examples, backend.encode_images, config.latent_sampling, data.seed,
                          backend.device, config.use_alpha_weight, processes=processes, cache=cache)
    texts = TextCache(backend.encode_texts, backend.device)
    texts.warm_through(data.prompts.distinct_fixed_prompts(), cache, processes.writes)
    validator = (_validator(backend, config, schedule, texts, data, name, cache)
                 if data.validation_examples and processes.writes else None)
    encoded = EncodedSet(backend, _settings(config), data.seed, list(data.examples), list(data.validation_examples),
                         latents, texts, validator)
    if shared is not None:
        shared.encoded = encoded
    return encoded, cache


def _data(network: Hypernetwork, config: TrainConfig, processes: Processes, device: torch.device,
          examples: Sequence[TrainingExample], validation_examples: Sequence[TrainingExample], name: str) -> _RunData:
    """The resume state and seed, the held-out split, the process group, the batch plan, the prompts."""
    resume = load_resume_state(network)
    seed = int(resume["seed"]) if resume and "seed" in resume else int(config.seed)
    validation_examples = list(validation_examples)
    if not validation_examples and config.validation_split > 0:
        # Chosen from the run's seed (the stored one when resuming), so the same images stay out.
        examples, validation_examples = split_examples(examples, config.validation_split, seed)
    processes.start(device)
    # batch_size is per process: a global micro-batch holds batch_size x processes images.
    plan = BatchPlan([e.size for e in examples], config.batch_size * processes.world_size,
                     config.gradient_accumulation, seed)
    prompts = PromptSource([e.caption for e in examples], config.template_list, name, seed, config.shuffle_tags,
                           config.tag_dropout, config.keep_tokens)
    return _RunData(seed, resume, examples, validation_examples, plan, prompts)


def _validator(backend: TrainingBackend, config: TrainConfig, schedule: NoiseSchedule, texts: TextCache,
               data: _RunData, name: str, cache: Optional[EncodingCache]) -> Validator:
    prompts = PromptSource([e.caption for e in data.validation_examples], config.template_list, name, data.seed)
    settings = ValidationSettings(config.loss_type, config.min_snr_gamma, config.noise_offset,
                                  config.batch_size, config.use_alpha_weight)
    return Validator(data.validation_examples, backend, schedule, prompts, texts, data.seed, settings, cache)


def _cache_figures(cache: Optional[EncodingCache]) -> Optional[CacheFigures]:
    """The cache's use by this run, once its shards are marked used and the limit is kept."""
    if cache is None:
        return None
    cache.touch()
    if cache.failed is None:
        logger.info(cache.figures.line())
        return cache.figures
    return None


def _previous_best(config: TrainConfig, log_dir: Optional[Path], start_step: int,
                   result: TrainResult) -> Optional[float]:
    """A resumed run keeps the best validation loss its earlier steps reached (NAME-best.pt)."""
    if log_dir is None or not start_step:
        return None
    path = log_dir / f"{config.file_stem}-best.pt"
    best = read_optimizer_state(path) if path.is_file() else None
    if best and best.get("val_loss") is not None and int(best.get("step") or 0) <= start_step:
        result.best_step = int(best["step"])
        return float(best["val_loss"])
    return None


def computes_in_fp16(precision: str, backend: TrainingBackend) -> bool:
    """Whether the UNet's forward, and so the backward through it, runs in fp16: precision fp16
    (autocast), or precision fp32 over fp16 weights (no autocast: the UNet computes in its weights'
    dtype, as the headless loader and ComfyUI load them on CUDA). bf16 autocast computes in bf16,
    whose range is fp32's. Where this holds the gradient scaler is on: unscaled, fp16 gradients
    underflow to zero (docs/training.md, Precision)."""
    autocast = PRECISIONS[precision]
    if autocast is not None:
        return autocast is torch.float16
    return backend.compute_dtype() is torch.float16


def _optimization(network: Hypernetwork, config: TrainConfig, device: torch.device, start_step: int,
                  resume: Optional[dict], first_rate: float, options: dict[str, Any], result: TrainResult, name: str,
                  uses_fp16: bool) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer, LearningRate,
                                            torch.amp.GradScaler]:
    """The trainable parameters on the device, the optimizer, its learning rate and the gradient
    scaler (on when the UNet computes in fp16: `uses_fp16`), each continuing from `resume` where it
    holds their state."""
    network.to(device)
    network.train()
    network.requires_grad_(True)
    parameters = list(network.parameters())
    optimizer = make_optimizer(config.optimizer, parameters, first_rate, options)
    result.resumed_optimizer = restore_optimizer(optimizer, resume)
    rate = make_learning_rate(config, optimizer, start_step)
    if start_step:
        saved = resume.get("lr_scheduler") if resume else None
        rate.load_state_dict(saved if saved and saved.get("kind") == config.lr_scheduler else None, start_step)
        logger.info("%s: continuing from step %d, optimizer state %s", name, start_step,
                    "restored" if result.resumed_optimizer else "not found (starting fresh, as A1111 would)")
    scaler = torch.amp.GradScaler(device.type, enabled=uses_fp16)
    if resume and resume.get("grad_scaler") and scaler.is_enabled():
        scaler.load_state_dict(resume["grad_scaler"])
    return parameters, optimizer, rate, scaler
