"""Training runs from the objects a graph passes around (MODEL, CLIP, VAE, IMAGE lists): pick
the backend, prepare the data, then per spec (a sweep: several, one after the other) make or
continue the network, train, summarise the run (run_summary.json) and draw its loss curve."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch

from ..errors import InputError
from ..files import UnsafePathError, safe_join
from ..images import save_png
from .batches import TrainingExample, prepare_examples
from .config import TrainConfig, TrainHooks, TrainResult
from .lossplot import LossHistory, loss_curve_image
from .prepared_run import SweepEncodings
from .run import TrainingRun
from .run_files import RunFolders, run_files
from .run_summary import write_run_summary
from .sweep import sweep_names

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
    """Train one network (from `spec`, or continuing `hypernetwork`) and return the result with its
    loss curve: run_sweep over one spec. Call outside inference mode."""
    return run_sweep(model, clip, vae, data, config, [spec] if spec is not None else [], hypernetwork, hooks,
                     device, load_model, folders, processes)[0]


def run_sweep(model: Any, clip: Any, vae: Any,  # our headless MODEL/CLIP/VAE or ComfyUI's
              data: TrainingData, config: TrainConfig, specs: Sequence["HypernetSpec"],
              hypernetwork: Optional["Hypernetwork"] = None, hooks: Optional[TrainHooks] = None,
              device: Optional[torch.device] = None, load_model: Optional[Callable[[object, float], None]] = None,
              folders: Optional[RunFolders] = None,
              processes: Optional["TrainingProcesses"] = None) -> list[TrainOutputs]:
    """Train one network per spec, one after the other (or continue `hypernetwork`: one run), and
    return each run's outputs. Call outside inference mode.

    Several specs are a sweep: run i is named NAME-<spec> (sweep.py) with its own files, the
    pictures are sized and encoded once for all runs (SweepEncodings), and [name] in the prompt
    templates stays NAME, so every run trains on the same prompts. An interrupted run ends the
    sweep. With `folders`, a run writes under its name, or under the next free NAME_00001...
    when that holds results it would replace (run_files.py). With `processes` (a torchrun
    launch), every process runs the same sweep and only rank 0 writes (distributed.py)."""
    hooks = hooks or TrainHooks()
    notes = []
    if specs and hypernetwork is not None:
        notes.append("both hypernet_spec and hypernetwork are connected: the hypernetwork is continued and the "
                     + ("spec is ignored" if len(specs) == 1 else f"{len(specs)} specs are ignored"))
        logger.warning(notes[-1])
        specs = []
    names = sweep_names(config.name, specs)  # every name is checked before anything is encoded
    backend = make_backend(model, clip, vae, device, load_model)
    examples = data.examples(config)
    held_out = []
    if data.validation_images:
        held_out = _validation_examples(data, config)
        if config.validation_split > 0:
            notes.append("validation images are connected, so validation_split is not used")
    sweep, outputs = Sweep(backend, examples, held_out, config, hooks, folders, processes, SweepEncodings()), []
    run_specs: list[Optional["HypernetSpec"]] = list(specs) or [None]  # None: continue `hypernetwork`
    for number, (name, spec) in enumerate(zip(names, run_specs), start=1):
        if len(names) > 1:
            hooks.on_run_start(number, len(names), name)
        outputs.append(sweep.train(name, spec, hypernetwork))
        if outputs[-1].result.interrupted:
            break
    outputs[0].notes[:0] = notes
    return outputs


@dataclass
class Sweep:
    """What the runs of a sweep (or the only run) share, and train() for each run's network."""

    backend: "TrainingBackend"
    examples: Sequence[TrainingExample]
    held_out: Sequence[TrainingExample]
    config: TrainConfig
    hooks: TrainHooks
    folders: Optional[RunFolders]
    processes: Optional["TrainingProcesses"]
    shared: SweepEncodings

    def train(self, name: str, spec: Optional["HypernetSpec"], hypernetwork: Optional["Hypernetwork"]) -> TrainOutputs:
        """Train the network of `spec` (or continue `hypernetwork`) as run `name`, writing its
        run_summary.json at the end, also when it is stopped or diverges after a step."""
        config, notes = self.config, []
        network = starting_network(self.backend, name, spec, hypernetwork, config.seed)
        network.name = name
        if self.folders is not None:
            config, note = _with_run_files(config, self.folders, network, name)
            notes += [note] if note else []
        else:
            config = replace(config, run_name=name)
        checkpoint = self.backend.checkpoint_name()
        if checkpoint and checkpoint != network.sd_checkpoint_name:
            # As A1111, the file records the checkpoint it was trained on; a hash of another one would mislead.
            network.sd_checkpoint_name, network.sd_checkpoint = checkpoint, None
        start_step = int(network.step)
        training = TrainingRun(self.backend, network, self.examples, config, self.hooks, self.held_out,
                               self.processes, self.shared)
        try:
            result = training.run()
        except BaseException:
            self._summarise(training, completed=False)
            raise
        self._summarise(training, completed=True)
        for note in run_notes(config, result, start_step, self.processes):
            logger.info(note)
            notes.append(note)
        curve = loss_curve_image(LossHistory.of_run(result), title=f"{config.file_stem} loss")
        curve_path = None
        if config.log_dir is not None and self.writes:
            curve_path = save_png(curve, safe_join(config.log_dir, "loss_curve.png"))
            self.hooks.on_file_written(curve_path)
        return TrainOutputs(result, curve, curve_path, config.file_stem, notes)

    @property
    def writes(self) -> bool:
        """This process writes the run's files (the only one, or rank 0 under torchrun)."""
        return self.processes is None or self.processes.writes

    def _summarise(self, training: TrainingRun, completed: bool) -> None:
        """run_summary.json for a run that ended, or stopped after at least one step; a failure to
        write it while another error is on its way is logged, not raised over that error."""
        if not self.writes or (not completed and not training.result.losses):
            return
        try:
            path = write_run_summary(training, time.perf_counter())
        except Exception:
            if completed:
                raise
            logger.exception("could not write the run summary of '%s'", training.config.file_stem)
            return
        if path is not None:
            self.hooks.on_file_written(path)


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


def _with_run_files(config: TrainConfig, folders: RunFolders, network: "Hypernetwork",
                    name: Optional[str] = None) -> tuple[TrainConfig, str]:
    """The config with the files of run `name` (default: the config's name), and a note when earlier
    results made it take a new name."""
    name = name or config.name
    try:
        files = run_files(folders, name, int(network.step), getattr(network, "filename", None))
    except UnsafePathError as exc:  # e.g. NAME.pt is a link to a file outside the folder
        raise InputError("name", f"{exc}; choose another name") from None
    note = ""
    if files.name != name:
        note = (f"'{name}' already has results this run would replace, so it writes under '{files.name}' "
                "(turn overwrite on to replace them)")
    return replace(config, final_path=files.final_path, log_dir=files.log_dir, run_name=files.name), note
