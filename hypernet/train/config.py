"""What a training run is told (TrainConfig), what it gives back (TrainResult), how it talks to
its host (TrainHooks), and how it fails when the numbers blow up (TrainingDiverged).

TrainConfig's field defaults are the one home of the Train Hypernet node's defaults: the node
declares each widget that has a field here with `TrainConfig.default(name)`, and
tests/nodes/test_train.py checks every such widget's declared default against its field."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import torch

from ..errors import InputError
from ..files import UnsafePathError, check_name_text
from ..input_values import check_choice
from .encoding_cache import CACHE_FOLDER
from .templates import template_lines

if TYPE_CHECKING:
    from .encoding_cache import CacheFigures
    from .epochs import EpochFigures

OPTIMIZERS = ("AdamW", "Adam", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta")
CLIP_MODES = ("disabled", "value", "norm")
PRECISIONS: dict[str, Optional[torch.dtype]] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
LATENT_SAMPLING_MODES = ("once", "deterministic", "random")
LR_SCHEDULERS = ("a1111", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts")
LOSS_TYPES = ("mse", "l1", "huber", "smooth_l1")
LOG_TARGETS = ("none", "tensorboard")
_NAME = re.compile(r"^[\w][\w .\-]*$")
# The longest ending a run adds to its name (a numbered run's step file's optimizer state), so
# that a name accepted at validation fits every file the run may write.
LONGEST_RUN_FILE_ENDING = "_00001-10000000.pt.optim"


@dataclass
class TrainConfig:
    """Everything the Train Hypernet node exposes, with its defaults (A1111's where A1111 has one)."""

    name: str
    steps: int = 2000
    templates: Optional[Sequence[str]] = None  # the prompt template lines; None: those prompt_template names
    prompt_template: str = "style_filewords"  # a set in templates/, or "custom": the lines of custom_template
    custom_template: str = "a picture of [filewords], by [name]"
    learning_rate: str = "0.00001"
    batch_size: int = 1
    gradient_accumulation: int = 1
    optimizer: str = "AdamW"
    clip_grad_mode: str = "disabled"
    clip_grad_value: str = "0.1"
    seed: int = 0
    shuffle_tags: bool = False
    tag_dropout: float = 0.0
    keep_tokens: int = 0  # kohya's: leading caption tags that shuffle and dropout leave in place (prompts.py)
    latent_sampling: str = "once"
    use_alpha_weight: bool = False
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    save_every: int = 500
    preview_every: int = 500
    preview_prompt: str = ""
    preview_negative: str = ""
    preview_seed: int = 0
    preview_steps: int = 20
    preview_cfg: float = 7.0  # previews: euler, "normal" schedule, negative prompt below
    csv_every: int = 100
    offload_encoders: bool = True
    resolution: int = 512
    aspect_buckets: bool = True
    overwrite: bool = False
    # Beyond A1111 (every default keeps A1111's behaviour): the learning-rate scheduler,
    lr_scheduler: str = "a1111"
    warmup_steps: int = 0
    restart_cycle_steps: int = 0  # cosine_with_restarts: steps of the first cycle, 0 = the whole run
    restart_cycle_mult: int = 1
    min_learning_rate: float = 0.0
    # optimizer options (weight_decay < 0: the optimizer's own default, AdamW's 0.01 as in A1111),
    weight_decay: float = -1.0
    optimizer_args: str = ""
    # the loss,
    loss_type: str = "mse"
    min_snr_gamma: float = 0.0
    noise_offset: float = 0.0
    # validation, several preview prompts x seeds, and logs.
    validation_split: float = 0.0
    validation_every: int = 100
    preview_seeds: str = ""  # empty: preview_seed
    log_to: str = "none"
    # The persistent cache: the node's folder text (under the output folder; CACHE_OFF = none),
    # which the node resolves into cache_dir, what a run uses.
    cache_folder: str = CACHE_FOLDER
    log_dir: Optional[Path] = None  # periodic saves, previews, CSV; None = none of them
    final_path: Optional[Path] = None  # where the finished network goes; None = not saved
    run_name: Optional[str] = None  # the name files are written under (default: name), see run_files.py
    cache_dir: Optional[Path] = None  # the persistent cache's folder (encoding_cache.py); None = no cache

    def __post_init__(self) -> None:
        if self.templates is None:
            self.templates = template_lines(self.prompt_template, self.custom_template)

    @property
    def template_list(self) -> Sequence[str]:
        """The prompt template lines: `templates`, or (were it set to None later) the chosen set's."""
        if self.templates is None:
            return template_lines(self.prompt_template, self.custom_template)
        return self.templates

    @property
    def file_stem(self) -> str:
        """NAME in NAME-STEP.pt and images/NAME-STEP.png."""
        return self.run_name or self.name

    @classmethod
    def default(cls, name: str) -> Any:
        """The default value of field `name` (for the node's widget defaults)."""
        return next(f.default for f in fields(cls) if f.name == name)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], **fixed: Any) -> "TrainConfig":
        """A config from any mapping holding (some of) the fields, e.g. a node's widget values;
        other keys are ignored, `fixed` wins."""
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in known}, **fixed})


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
    validation_steps: list[int] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)
    best_path: Optional[Path] = None  # NAME-best.pt: the lowest validation loss so far
    best_step: Optional[int] = None
    interrupted: bool = False
    resumed_optimizer: bool = False
    seconds: float = 0.0
    epochs: Optional["EpochFigures"] = None  # the pictures, images per step and epochs (set before the first step)
    cache: Optional["CacheFigures"] = None  # what the persistent cache held and took (None: no cache)


class TrainingDiverged(RuntimeError):
    """The loss, the gradients or the weights became NaN/inf; no file with bad weights was written."""

    def __init__(self, message: str, step: int, last_good_path: Optional[Path]):
        super().__init__(message)
        self.step, self.last_good_path = step, last_good_path


class TrainHooks:
    """Host callbacks; the node maps them to ComfyUI's ProgressBar, interrupt and events."""

    def should_stop(self) -> bool:
        """True when the user asked to stop (checked once per step, before anything raises)."""
        return False

    def on_run_start(self, number: int, count: int, name: str) -> None:
        """Called before each run of a sweep of `count` specs (not for a single run): run `number`
        (from 1) trains the network `name`."""

    def on_epochs(self, figures: "EpochFigures") -> None:
        """Called once before the first step (and before encoding) with what `steps` means for
        this set: pictures, images per step, epochs (only on the process that writes)."""

    def on_step(self, step: int, total: int, loss: float, learn_rate: float) -> None:
        """Called after every optimizer step (may raise the host's interrupt)."""

    def on_validation(self, step: int, val_loss: float) -> None:
        """Called after each validation with the mean loss over the held-out images."""

    def is_interrupt(self, exc: BaseException) -> bool:
        """True for the host's interrupt exception. ComfyUI raises it from inside any model
        call (its ops check the flag on every layer), so it can arrive mid-step."""
        return isinstance(exc, KeyboardInterrupt)

    def on_preview(self, step: int, image: torch.Tensor) -> None:
        """Called with every preview image [1,H,W,3]."""

    def on_file_written(self, path: Path) -> None:
        """Called after each file the run writes (.pt, .optim, preview PNG)."""

    def on_stopped_early(self, step: int, saved: list[Path]) -> None:
        """Called when the user stopped the run: the step reached and the files just saved."""


def validate_name(name: str) -> str:
    """A network name usable as a file name: letters, digits, space, '.', '_', '-'."""
    name = str(name).strip()
    try:
        check_name_text(name, reserve=len(LONGEST_RUN_FILE_ENDING))
    except UnsafePathError as exc:
        raise InputError("name", str(exc)) from None
    if not _NAME.match(name):
        raise InputError("name", f"{name!r}: use letters, digits, spaces, '.', '_' or '-' "
                                 "(it becomes the file name)")
    return name


def check_choices(config: TrainConfig) -> None:
    """The combo-like fields hold known values (InputError naming the field otherwise)."""
    for name, allowed in (("clip_grad_mode", CLIP_MODES), ("precision", tuple(PRECISIONS)),
                          ("latent_sampling", LATENT_SAMPLING_MODES), ("lr_scheduler", LR_SCHEDULERS),
                          ("loss_type", LOSS_TYPES), ("log_to", LOG_TARGETS)):
        check_choice(name, getattr(config, name), allowed)
    if not 0.0 <= float(config.tag_dropout) < 1.0:
        raise InputError("tag_dropout", f"must be in [0, 1), got {config.tag_dropout}")
    if not 0.0 <= float(config.validation_split) < 1.0:
        raise InputError("validation_split", f"must be in [0, 1), got {config.validation_split}")
    for name in ("min_snr_gamma", "noise_offset"):
        if float(getattr(config, name)) < 0:
            raise InputError(name, f"must be 0 (off) or more, got {getattr(config, name)}")
