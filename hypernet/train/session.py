"""One training run from the objects a graph passes around (MODEL, CLIP, VAE, IMAGE lists):
pick the backend, make or continue the
network, prepare the data, train, and draw the loss curve."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch

from ..errors import InputError
from ..files import UnsafePathError, safe_join
from ..images import save_png
from .batches import prepare_examples
from .config import TrainConfig, TrainHooks, TrainResult
from .lossplot import LossHistory, loss_curve_image
from .run import train_hypernetwork
from .run_files import RunFolders, run_files

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..network import Hypernetwork
    from ..spec import HypernetSpec
    from .backend import TrainingBackend
    from .batches import TrainingExample
    from .distributed import TrainingProcesses
    from .picture_files import TrainingSet


@dataclass
class TrainingData:
    """The images and captions to train on (parallel lists from the dataset nodes) and their masks,
    or a training set read from a folder (Load Training Set), whose pictures are decoded only
    when their latents are encoded."""

    images: Sequence[torch.Tensor] = ()
    captions: Sequence[str] = ()
    masks: Optional[Sequence[Optional[torch.Tensor]]] = None
    validation_images: Sequence[torch.Tensor] = ()  # a held-out set of its own (else a split, or none)
    validation_captions: Sequence[str] = ()
    training_set: Optional["TrainingSet"] = None  # instead of images, captions and masks

    def examples(self, config: TrainConfig) -> list["TrainingExample"]:
        """What is trained on, sized for `config`: from the folder, or from the images in memory."""
        if self.training_set is not None:
            if self.images or self.captions or self.masks:
                raise InputError("training_set", "a training set brings its own pictures, captions and masks (alpha): "
                                                 "give it or images with captions, not both")
            return self.training_set.examples(config.resolution, config.aspect_buckets)
        return prepare_examples(self.images, self.captions, self.masks, config.resolution, config.aspect_buckets)


@dataclass
class TrainOutputs:
    result: TrainResult
    loss_curve: torch.Tensor  # IMAGE [1,H,W,3]
    loss_curve_path: Optional[Path] = None
    run_name: str = ""
    notes: list[str] = field(default_factory=list)  # things the user should know (shown on the node)


def make_backend(model: Any, clip: Any, vae: Any,  # our headless MODEL/CLIP/VAE or ComfyUI's
                 device: Optional[torch.device] = None,
                 load_model: Optional[Callable[[object, float], None]] = None) -> "TrainingBackend":
    """The headless backend for our HeadlessModel, the ComfyUI one for anything else."""
    from ..sd.headless import HeadlessModel

    if isinstance(model, HeadlessModel):
        from .backend_diffusers import DiffusersBackend

        return DiffusersBackend(model, clip, vae)
    from .backend_comfy import ComfyBackend

    return ComfyBackend(model, clip, vae, device=device, load_model=load_model)


def starting_network(backend: "TrainingBackend", name: str, spec: Optional["HypernetSpec"] = None,
                     hypernetwork: Optional["Hypernetwork"] = None, seed: int = 0) -> "Hypernetwork":
    """A copy of `hypernetwork` to continue (the input is never modified), or a new one from `spec`."""
    from ..network import Hypernetwork

    if hypernetwork is not None:
        network = hypernetwork.copy()
        network.filename = getattr(hypernetwork, "filename", None)
        return network
    if spec is None:
        raise InputError("hypernet_spec", "connect a HYPERNET_SPEC (new network) or a hypernetwork (to continue one)")
    sizes = spec.sizes if spec.sizes is not None else backend.attention_widths()
    init_seed = spec.init_seed if spec.init_seed is not None else seed
    return Hypernetwork.build(spec, sizes=sizes, seed=init_seed, name=name)


def run_training(model: Any, clip: Any, vae: Any,  # our headless MODEL/CLIP/VAE or ComfyUI's
                 data: TrainingData, config: TrainConfig, spec: Optional["HypernetSpec"] = None,
                 hypernetwork: Optional["Hypernetwork"] = None, hooks: Optional[TrainHooks] = None,
                 device: Optional[torch.device] = None, load_model: Optional[Callable[[object, float], None]] = None,
                 folders: Optional[RunFolders] = None,
                 processes: Optional["TrainingProcesses"] = None) -> TrainOutputs:
    """Train and return the result with its loss curve. Call outside inference mode.

    With `folders`, the run writes under NAME, or under the next free NAME_00001... when NAME
    holds results it would replace (see run_files.py). With `processes` (a torchrun launch),
    this process trains its share and only rank 0 writes (distributed.py)."""
    notes = []
    if spec is not None and hypernetwork is not None:
        notes.append("both hypernet_spec and hypernetwork are connected: the hypernetwork is continued and the "
                     "spec is ignored")
        logger.warning(notes[-1])
    backend = make_backend(model, clip, vae, device, load_model)
    network = starting_network(backend, config.name, spec, hypernetwork, config.seed)
    network.name = config.name
    if folders is not None:
        config, note = _with_run_files(config, folders, network)
        notes += [note] if note else []
    checkpoint = backend.checkpoint_name()
    if checkpoint and checkpoint != network.sd_checkpoint_name:
        # As A1111, the file records the checkpoint it was trained on; a hash of another one would mislead.
        network.sd_checkpoint_name, network.sd_checkpoint = checkpoint, None
    examples = data.examples(config)
    held_out = []
    if data.validation_images:
        held_out = _validation_examples(data, config)
        if config.validation_split > 0:
            notes.append("validation images are connected, so validation_split is not used")
    start_step = int(network.step)
    result = train_hypernetwork(backend, network, examples, config, hooks, held_out, processes)
    for note in run_notes(config, result, start_step, processes):
        logger.info(note)
        notes.append(note)
    curve = loss_curve_image(LossHistory.of_run(result), title=f"{config.name} loss")
    curve_path = None
    if config.log_dir is not None and (processes is None or processes.writes):
        curve_path = save_png(curve, safe_join(config.log_dir, "loss_curve.png"))
        (hooks or TrainHooks()).on_file_written(curve_path)
    return TrainOutputs(result, curve, curve_path, config.file_stem, notes)


def run_notes(config: TrainConfig, result: TrainResult, start_step: int,
              processes: Optional["TrainingProcesses"] = None) -> list[str]:
    """What the run did that its settings alone do not say: the pictures, images per step and
    epochs, where it continued from, how many processes shared each step, what the cache held
    and took, and why it stopped before `steps`."""
    notes = [result.epochs.line()] if result.epochs is not None else []
    if start_step:
        notes.append(f"continued from step {start_step} " + ("with optimizer state" if result.resumed_optimizer else
                                                             "without optimizer state (no matching .optim beside the "
                                                             "file: the optimizer starts fresh, as A1111's does)"))
    # The epochs line already names the processes and the images per step, as the batch plan counts
    # them (cut down where the set is smaller than the global batch); this note is for a result without it.
    if processes is not None and processes.world_size > 1 and result.epochs is None:
        per_step = config.batch_size * processes.world_size * config.gradient_accumulation
        notes.append(f"trained on {processes.world_size} processes: global batch {config.batch_size} x "
                     f"{processes.world_size} processes x {config.gradient_accumulation} accumulation = "
                     f"{per_step} images per step")
    if result.cache is not None:
        notes.append(result.cache.line())
    step = int(result.hypernetwork.step)
    if not result.interrupted and step < config.steps and config.lr_scheduler == "a1111":
        notes.append(f"stopped at step {step} of {config.steps}: the learning_rate schedule "
                     f"'{config.learning_rate}' ends at step {step} (end it with a rate without ':step', "
                     f"e.g. '{config.learning_rate}, 1e-5', to train on)")
    return notes


def _validation_examples(data: TrainingData, config: TrainConfig) -> list:
    """The connected validation set at the training resolution (its own input names in errors)."""
    try:
        return prepare_examples(data.validation_images, data.validation_captions, None, config.resolution,
                                config.aspect_buckets)
    except InputError as exc:
        raise InputError(f"validation_{exc.input_name}", exc.message) from None


def _with_run_files(config: TrainConfig, folders: RunFolders, network: "Hypernetwork") -> tuple[TrainConfig, str]:
    """The config with the run's files, and a note when earlier results made it take a new name."""
    try:
        files = run_files(folders, config.name, int(network.step), getattr(network, "filename", None))
    except UnsafePathError as exc:  # e.g. NAME.pt is a link to a file outside the folder
        raise InputError("name", f"{exc}; choose another name") from None
    note = ""
    if files.name != config.name:
        note = (f"'{config.name}' already has results this run would replace, so it writes under '{files.name}' "
                "(turn overwrite on to replace them)")
    return replace(config, final_path=files.final_path, log_dir=files.log_dir, run_name=files.name), note
