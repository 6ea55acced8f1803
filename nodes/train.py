"""Train Hypernet (dataset -> latents -> train -> file): the A1111-parity trainer as one node.
The work is in hypernet/train; widget defaults come from TrainConfig."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..hypernet.errors import InputError
from ..hypernet.files import UnsafePathError, safe_join
from ..hypernet.input_values import MAX_SEED, check_choice
from ..hypernet.train import previews
from ..hypernet.train.config import (
    CLIP_MODES,
    LATENT_SAMPLING_MODES,
    LOG_TARGETS,
    LOSS_TYPES,
    LR_SCHEDULERS,
    OPTIMIZERS,
    PRECISIONS,
    TrainConfig,
    TrainHooks,
    validate_name,
)
from ..hypernet.train.encoding_cache import CACHE_LIMIT_ENV, CACHE_OFF
from ..hypernet.train.learning_rate import parse_schedule, plain_rate
from ..hypernet.train.logs import check_log_target
from ..hypernet.train.optimizer import parse_optimizer_args
from ..hypernet.train.run_files import RunFolders
from ..hypernet.train.templates import CUSTOM, TEMPLATE_SETS, template_lines
from .host import HOST, TRAINING_FOLDER
from .paths import cache_folder as resolve_cache_folder
from .widgets import Node, boolean, combo, decimal, integer, mappings, single_values, socket, text, validation

logger = logging.getLogger(__name__)

EVENT = "hypernet.train_step"
EVENT_INTERVAL_S = 0.25
MAX_STEPS = 10_000_000  # the steps inputs' maximum; a schedule's syntax is checked against it too
_default = TrainConfig.default
UNLINKED = object()  # VALIDATE_INPUTS' default for a socket that is not linked
PICTURE_SOCKETS = ("images", "captions", "masks", "training_set")

TRAIN_INPUTS = {
    "model": socket("MODEL", tooltip="The checkpoint's MODEL: SD1, SD2 (eps or v prediction) or SDXL base."),
    "clip": socket("CLIP", tooltip="The checkpoint's CLIP; each distinct prompt is encoded once and cached."),
    "vae": socket("VAE", tooltip="The checkpoint's VAE; every image is encoded once and cached."),
    "name": text(default="my-hypernet", tooltip="Name of the network: the file name and [name] in templates."),
    "steps": integer(default=_default("steps"), min=1, max=MAX_STEPS,
                     tooltip="Train until this many optimizer steps are done (a continued network counts on)."),
    "learning_rate": text(default=_default("learning_rate"),
                          tooltip="A1111 schedule: a rate, or 'rate:step, rate:step, rate' (e.g. 5e-5:100, "
                                  "5e-6:1500, 5e-7)."),
    "batch_size": integer(default=_default("batch_size"), min=1, max=256,
                          tooltip="Images per micro-batch (same-size bucket)."),
    "gradient_accumulation": integer(default=_default("gradient_accumulation"), min=1, max=1024,
                                     tooltip="Micro-batches per optimizer step; the loss is divided by it."),
    "optimizer": combo(OPTIMIZERS, default=_default("optimizer"),
                       tooltip="torch.optim optimizer with torch's defaults (A1111 uses AdamW)."),
    "clip_grad_mode": combo(CLIP_MODES, default=_default("clip_grad_mode"),
                            tooltip="Gradient clipping: off, by value, or by norm."),
    "clip_grad_value": text(default=_default("clip_grad_value"),
                            tooltip="Clipping value, as a schedule string like the learning rate."),
    "seed": integer(default=_default("seed"), min=0, max=MAX_SEED,
                    tooltip="Seed for noise, timesteps, batch order, prompts and a new network's weights."),
    "prompt_template": combo(TEMPLATE_SETS + (CUSTOM,), default=_default("prompt_template"),
                             tooltip="Template set (A1111's six) or 'custom' to use custom_template."),
    "custom_template": text(default=_default("custom_template"), multiline=True,
                            tooltip="Custom template lines ([name], [filewords]); used when prompt_template is "
                                    "custom."),
    "shuffle_tags": boolean(default=_default("shuffle_tags"),
                            tooltip="Shuffle the comma-separated caption tags for every use."),
    "tag_dropout": decimal(default=_default("tag_dropout"), min=0.0, max=0.95, step=0.05,
                           tooltip="Probability of dropping each caption tag for every use."),
    "latent_sampling": combo(LATENT_SAMPLING_MODES, default=_default("latent_sampling"),
                             tooltip="once: one VAE sample cached; deterministic: the mean; random: a fresh sample "
                                     "each use."),
    "use_alpha_weight": boolean(default=_default("use_alpha_weight"),
                                tooltip="Weight the loss by the image alpha (from masks: 1 = transparent counts 0)."),
    "resolution": integer(default=_default("resolution"), min=64, max=2048, step=64,
                          tooltip="Training side length; images keep their aspect in buckets of about resolution² "
                                  "pixels."),
    "aspect_buckets": boolean(default=_default("aspect_buckets"),
                              tooltip="On: cover-and-crop into aspect buckets. Off: stretch to resolution² (A1111)."),
    "save_every": integer(default=_default("save_every"), min=0, max=1_000_000,
                          tooltip="Save name-STEP.pt (+ .optim with optimizer and RNG state) every N steps; 0 = only "
                                  "at the end."),
    "preview_every": integer(default=_default("preview_every"), min=0, max=1_000_000,
                             tooltip="Sample a preview image every N steps; 0 = never."),
    "preview_prompt": text(default=_default("preview_prompt"), multiline=True,
                           tooltip="Prompt for previews; empty = the first training prompt."),
    "preview_seed": integer(default=_default("preview_seed"), min=0, max=MAX_SEED,
                            tooltip="Seed of the preview noise."),
    "preview_steps": integer(default=_default("preview_steps"), min=1, max=150,
                             tooltip="Sampling steps per preview (euler, normal schedule, cfg 7, as KSampler)."),
    "csv_every": integer(default=_default("csv_every"), min=0, max=1_000_000,
                         tooltip="Write a hypernetwork_loss.csv row every N steps; 0 = no CSV."),
    "precision": combo(PRECISIONS, default=_default("precision"),
                       tooltip="Autocast dtype; weights stay fp32 (fp16 uses a GradScaler)."),
    "gradient_checkpointing": boolean(default=_default("gradient_checkpointing"),
                                      tooltip="Recompute UNet activations in backward: less memory, slower."),
    "offload_encoders": boolean(default=_default("offload_encoders"),
                                tooltip="Move VAE and CLIP off the training device once everything is cached."),
}
# Widgets added after the first release are optional, so that saved workflows (UI and API format)
# keep every old value in its place and get these at their defaults.
NEW_WIDGETS = {
    "overwrite": boolean(default=_default("overwrite"),
                         tooltip="Replace the files of an earlier run of this name. Off: a name that has results "
                                 "gets the next number (NAME_00001), as Save Hypernet does; continuing a run from "
                                 "its own step file is kept."),
    "lr_scheduler": combo(LR_SCHEDULERS, default=_default("lr_scheduler"),
                          tooltip="a1111: the learning_rate schedule string. Others (learning_rate = the peak rate): "
                                  "constant/linear/cosine with a warmup, or cosine with restarts."),
    "warmup_steps": integer(default=_default("warmup_steps"), min=0, max=MAX_STEPS,
                            tooltip="Steps the rate rises linearly from 0 (schedulers other than a1111)."),
    "restart_cycle_steps": integer(default=_default("restart_cycle_steps"), min=0, max=MAX_STEPS,
                                   tooltip="cosine_with_restarts: steps of the first cycle; 0 = the whole run after "
                                           "the warmup."),
    "restart_cycle_mult": integer(default=_default("restart_cycle_mult"), min=1, max=100,
                                  tooltip="cosine_with_restarts: each cycle is this many times longer than the last."),
    "min_learning_rate": decimal(default=_default("min_learning_rate"), min=0.0, max=1.0, step=1e-7,
                                 tooltip="cosine_with_restarts: the rate at the bottom of each cycle."),
    "weight_decay": decimal(default=_default("weight_decay"), min=-1.0, max=10.0, step=0.001,
                            tooltip="Optimizer weight decay; -1 = the optimizer's own default (AdamW 0.01, as A1111)."),
    "optimizer_args": text(default=_default("optimizer_args"),
                           tooltip="More optimizer options, e.g. 'betas=0.9,0.99 eps=1e-8' (names as in torch.optim; "
                                   "empty = torch's defaults)."),
    "loss_type": combo(LOSS_TYPES, default=_default("loss_type"), tooltip="mse (A1111), l1, huber or smooth_l1."),
    "min_snr_gamma": decimal(default=_default("min_snr_gamma"), min=0.0, max=100.0, step=0.5,
                             tooltip="Min-SNR-gamma loss weighting (5 is common); 0 = off (A1111)."),
    "noise_offset": decimal(default=_default("noise_offset"), min=0.0, max=1.0, step=0.01,
                            tooltip="Offset noise (0.05-0.1 helps very dark or bright pictures); 0 = off (A1111)."),
    "validation_split": decimal(default=_default("validation_split"), min=0.0, max=0.9, step=0.05,
                                tooltip="Fraction of the images held out for the validation loss (chosen from the "
                                        "seed)."),
    "validation_every": integer(default=_default("validation_every"), min=1, max=1_000_000,
                                tooltip="Compute the validation loss every N steps (and at the end)."),
    "preview_seeds": text(default=_default("preview_seeds"),
                          tooltip="Several preview seeds, e.g. '1, 2, 3': with one preview_prompt per line the "
                                  "previews are a prompt x seed grid. Empty = preview_seed."),
    "log_to": combo(LOG_TARGETS, default=_default("log_to"),
                    tooltip="Also log to TensorBoard (needs the tensorboard extra) under the run's folder."),
    "keep_tokens": integer(default=_default("keep_tokens"), min=0, max=1000,
                           tooltip="The first N comma-separated caption tags stay in place: shuffle_tags and "
                                   "tag_dropout leave them alone (kohya's keep_tokens; 0 = none, as A1111)."),
    "cache_folder": text(default=_default("cache_folder"),
                         tooltip="Where latents and prompt encodings are kept between runs (a folder under the output "
                                 f"folder, or a path); a second run encodes nothing again. '{CACHE_OFF}' = no cache. "
                                 f"Size limit: {CACHE_LIMIT_ENV} (MB)."),
}
# images and captions were required until a training set could replace them. As the first optional
# inputs they keep their place among the sockets (model, clip, vae, images, captions, ...) and take
# no widget value, so saved UI workflows keep every link and widget value, API ones every name.
PICTURE_INPUTS = {
    "images": socket("IMAGE", tooltip="Training images (a list from the dataset nodes; sizes may differ). Or connect "
                                      "a training_set instead."),
    "captions": socket("STRING", forceInput=True, tooltip="One caption per image; becomes [filewords]."),
}
OPTIONAL_INPUTS = {
    "hypernet_spec": socket("HYPERNET_SPEC", tooltip="Architecture for a new network; a list of them (Hypernet Spec "
                                                     "Grid) trains one network per spec, named NAME-<spec>."),
    "hypernetwork": socket("HYPERNETWORK",
                           tooltip="A network to continue (its .optim beside the file resumes exactly)."),
    "masks": socket("MASK", tooltip="Masks parallel to the images, for use_alpha_weight."),
    "validation_images": socket("IMAGE",
                                tooltip="A held-out set for the validation loss (instead of validation_split)."),
    "validation_captions": socket("STRING", forceInput=True, tooltip="Captions of the validation images."),
}
# Sockets added after the widgets above: a socket takes no widget value, so it may follow them.
LATE_SOCKETS = {
    "training_set": socket("HN_TRAINING_SET",
                           tooltip="A folder from Load Training Set, instead of images and captions: each picture is "
                                   "decoded when its latent is encoded, so the set may outgrow memory."),
}


OUTPUTS = (("hypernetwork", "HYPERNETWORK", "The trained network."),
           ("loss_curve", "IMAGE", "Loss, validation loss and learning rate per step."),
           ("previews", "IMAGE", "Preview grids (prompts x seeds)."),
           ("saved_path", "STRING", "Path of the saved .pt."),
           ("validation_loss", "FLOAT", "The last validation loss (NaN without validation)."))


class NodeHooks(TrainHooks):
    """The epoch figures as progress text (in a sweep, after the run's number and name), ProgressBar
    every step (from 0 again for each run of a sweep), interrupt check, throttled
    hypernet.train_step events."""

    def __init__(self, total: int, node_id):
        self.node_id, self.bar, self.last_event = node_id, HOST.progress_bar(total, node_id), 0.0
        self.run_label = ""  # in a sweep: which run the figures are for

    def should_stop(self) -> bool:
        return HOST.interrupt_requested()

    def on_run_start(self, number: int, count: int, name: str) -> None:
        self.run_label = f"run {number} of {count}, {name}: "

    def on_epochs(self, figures) -> None:
        HOST.send_progress_text(self.run_label + figures.line(), self.node_id)

    def on_step(self, step: int, total: int, loss: float, learn_rate: float) -> None:
        now = time.monotonic()
        if now - self.last_event >= EVENT_INTERVAL_S or step == total:
            self.last_event = now
            HOST.send_event(EVENT, {"node": self.node_id, "step": step, "loss": loss, "lr": learn_rate})
        self.bar.update_absolute(step, total)

    def is_interrupt(self, exc: BaseException) -> bool:
        return HOST.is_interrupt(exc)

    def on_validation(self, step: int, val_loss: float) -> None:
        HOST.send_event(EVENT, {"node": self.node_id, "step": step, "val_loss": val_loss})

    def on_file_written(self, path: Path) -> None:
        HOST.wrote(path)

    def on_stopped_early(self, step: int, saved: list[Path]) -> None:
        files = ", ".join(str(p) for p in saved) or "nothing (no step had finished)"
        report = f"interrupted at step {step}; saved {files}"
        logger.info(report)
        HOST.send_progress_text(report, self.node_id)


def train_config(widgets: dict[str, Any]) -> TrainConfig:
    """TrainConfig from the widget values (the run's folders are chosen when it starts)."""
    cache_dir = resolve_cache_folder(widgets.get("cache_folder", _default("cache_folder")))
    return TrainConfig.from_values(widgets, name=validate_name(widgets["name"]), cache_dir=cache_dir)


def host_arguments(config: TrainConfig, node_id) -> dict[str, Any]:
    """What run_training takes from the host: progress hooks, device, loader, folders, processes."""
    return {"hooks": NodeHooks(config.steps, node_id), "device": HOST.torch_device(),
            "load_model": HOST.load_model_for_training, "folders": run_folders(config.overwrite),
            "processes": HOST.training_processes()}


def run_folders(overwrite: bool) -> RunFolders:
    """Final files in the hypernetworks folder; step files, previews and CSV under the output folder."""
    return RunFolders(HOST.model_folders("hypernetworks")[0], HOST.output_directory() / TRAINING_FOLDER, overwrite)


def check_run_names(name: str) -> None:
    """NAME.pt and the log folder NAME stay inside their folders (not links that lead out of them)."""
    folders = run_folders(overwrite=False)
    try:
        safe_join(folders.models_folder, f"{name}.pt")
        safe_join(folders.log_root, name)
    except UnsafePathError as exc:
        raise InputError("name", f"{exc}; choose another name") from None


def check_steps_beyond_file(steps: int, hypernetwork_name: str) -> None:
    """`steps` goes beyond the step stored in the file Load Hypernet `hypernetwork_name` reads."""
    from ..hypernet.train.resume_files import stored_step
    from .model import hypernetwork_file

    stored = stored_step(hypernetwork_file(hypernetwork_name))
    if stored is not None and int(steps) <= stored:
        raise InputError("steps", f"{steps} is not above the step of '{hypernetwork_name}', which is already "
                                  f"trained for {stored} steps; set steps above {stored} to continue it")


def check_text_inputs(name, learning_rate, clip_grad_mode, clip_grad_value, prompt_template, custom_template,
                      lr_scheduler=None, optimizer=None, optimizer_args=None, preview_seeds=None, log_to=None,
                      cache_folder=None) -> None:
    """What VALIDATE_INPUTS can check without a model: names, schedules, templates, options, the cache folder."""
    if name is not None:
        check_run_names(validate_name(name))
    if cache_folder is not None:
        resolve_cache_folder(cache_folder)
    if lr_scheduler not in (None, "a1111"):
        check_choice("lr_scheduler", lr_scheduler, LR_SCHEDULERS)
        if learning_rate is not None:
            plain_rate(learning_rate)
    elif learning_rate is not None:
        parse_schedule(learning_rate, MAX_STEPS, 0, "learning_rate")
    if optimizer is not None:  # ComfyUI leaves the combo check to VALIDATE_INPUTS once it takes the input
        check_choice("optimizer", optimizer, OPTIMIZERS)
        if optimizer_args is not None:
            parse_optimizer_args(optimizer_args, optimizer)
    if preview_seeds is not None:
        previews.preview_seeds(TrainConfig(name="check", preview_seeds=preview_seeds))
    if log_to is not None:
        check_choice("log_to", log_to, LOG_TARGETS)
        check_log_target(log_to)
    if clip_grad_mode is not None:
        check_choice("clip_grad_mode", clip_grad_mode, CLIP_MODES)
    if clip_grad_mode not in (None, "disabled") and clip_grad_value is not None:
        parse_schedule(clip_grad_value, MAX_STEPS, 0, "clip_grad_value")
    if prompt_template is not None and (prompt_template != CUSTOM or custom_template is not None):
        template_lines(prompt_template, custom_template or "")


class TrainHypernetNode(Node):
    """Train a hypernetwork the way A1111 does (schedule strings, templates, tag shuffle, alpha loss
    weight, buckets), faster and resumable: latents and prompts are encoded once, every save holds
    optimizer and RNG state, NaN stops the run, and an interrupt saves first. The result goes to
    models/hypernetworks/NAME.pt; saves, previews and the loss CSV to output/hypernet_training/NAME/."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_TrainHypernet", "Train Hypernet", "hypernetwork/train", "train"
    INPUT_IS_LIST = True
    RETURN_NAMES, RETURN_TYPES, OUTPUT_TOOLTIPS = (tuple(column) for column in zip(*OUTPUTS))
    OUTPUT_IS_LIST = (True, True, True, True, True)  # one item per run: a list of specs is a sweep
    OUTPUT_NODE = True
    RUNS_ON_EVERY_PROCESS = True  # under torchrun each process trains its share (the runtime's executor)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(TRAIN_INPUTS), "optional": {**PICTURE_INPUTS, **OPTIONAL_INPUTS, **NEW_WIDGETS,
                                                             **LATE_SOCKETS},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def VALIDATE_INPUTS(cls, name, learning_rate, clip_grad_mode, clip_grad_value, prompt_template, custom_template,
                        optimizer, optimizer_args=None, preview_seeds=None, lr_scheduler=None, log_to=None,
                        cache_folder=None, images=UNLINKED, captions=UNLINKED, masks=UNLINKED,
                        training_set=UNLINKED):
        return validate_train_inputs({key: value for key, value in locals().items() if key != "cls"})

    def train(self, model, clip, vae, images=None, captions=None, hypernet_spec=None, hypernetwork=None, masks=None,
              validation_images=None, validation_captions=None, training_set=None, unique_id=None, **widgets):
        from ..hypernet.train.session import run_sweep

        w = {key: value[0] for key, value in widgets.items()}
        node_id = unique_id[0] if unique_id else None
        data = training_data(images, captions, masks, validation_images, validation_captions, training_set)
        with torch.inference_mode(False), torch.enable_grad():
            config = train_config(w)
            runs = run_sweep(model[0], clip[0], vae[0], data, config, list(hypernet_spec or []),
                             hypernetwork[0] if hypernetwork else None, **host_arguments(config, node_id))
        if runs[-1].result.interrupted:
            HOST.throw_if_interrupted()
        return _node_output(runs)


def validate_train_inputs(values: dict[str, Any]):
    """VALIDATE_INPUTS' answer. ComfyUI passes a linked socket as [None] (its value is not known
    before the run) and leaves an unlinked one out (UNLINKED, the default)."""
    linked = {key: values.pop(key) is not UNLINKED for key in PICTURE_SOCKETS}
    texts = single_values(values)
    return validation(lambda: check_picture_sockets(**linked), lambda: check_text_inputs(**texts))


def check_picture_sockets(images: bool, captions: bool, masks: bool, training_set: bool) -> None:
    """What to train on is connected once: images with their captions (and masks), or a training set."""
    if training_set:
        for other, linked in (("images", images), ("captions", captions), ("masks", masks)):
            if linked:
                raise InputError(other, "a training_set is connected, and it brings its own pictures, captions and "
                                        "masks (alpha): disconnect one of the two")
    elif not images:
        raise InputError("images", "connect the images and captions to train on (from the dataset nodes), or a "
                                   "training_set (from Load Training Set)")
    elif not captions:
        raise InputError("captions", "connect the captions of the images (one per image, from the dataset nodes)")


def training_data(images, captions, masks, validation_images, validation_captions, training_set):
    """The node's lists (copies: the node never changes its inputs) as TrainingData."""
    from ..hypernet.train.session import TrainingData

    # Unlinked, an optional input is None; linked, a list (empty when a filter upstream kept nothing:
    # then prepare_examples says the dataset is empty, rather than that nothing is connected).
    check_picture_sockets(images is not None, captions is not None, masks is not None, training_set is not None)
    if training_set is not None:
        return TrainingData(validation_images=_items(validation_images or []),
                            validation_captions=list(validation_captions or []), training_set=training_set[0])
    return TrainingData(_items(images), list(captions), [m.clone() for m in masks] if masks else None,
                        _items(validation_images or []), list(validation_captions or []))


def _items(images: list) -> list:
    """IMAGE batches split into single pictures (copies: the node never changes its inputs)."""
    return [image[i:i + 1].clone() for image in images for i in range(image.shape[0])]


def _node_output(runs: list) -> dict:
    """The node's text, the pictures shown on it, and its outputs: one item per run (a sweep's
    runs in the order of its specs), the previews of every run one after the other."""
    lines: list[str] = [f"sweep of {len(runs)} specs; the pictures were encoded once for all of them"] \
        if len(runs) > 1 else []
    shown, said = [], set()
    for outputs in runs:
        lines += _run_lines(outputs)
        lines += [note for note in outputs.notes if note not in said]  # a sweep's epochs line is said once
        said.update(outputs.notes)
        shown += [p for p in [outputs.loss_curve_path, *outputs.result.preview_paths] if p is not None]
    results = [outputs.result for outputs in runs]
    val_losses = [r.validation_losses[-1] if r.validation_losses else float("nan") for r in results]
    return {"ui": {"text": lines, "images": [_ui_image(p) for p in shown]},
            "result": ([r.hypernetwork for r in results], [outputs.loss_curve for outputs in runs],
                       [preview for r in results for preview in r.previews], [str(r.final_path) for r in results],
                       val_losses)}


def _run_lines(outputs) -> list[str]:
    """What one run did: its name, step, last loss and file; its validation loss when it validated."""
    result = outputs.result
    last = f"last loss {result.losses[-1]:.5f}" if result.losses else "no steps run"
    lines = [f"{outputs.run_name}: step {result.hypernetwork.step}, {last}, saved {result.final_path}"]
    if result.validation_losses:
        best = min(result.validation_losses)
        where = f" ({result.best_path})" if result.best_path else ""
        lines.append(f"validation loss {result.validation_losses[-1]:.5f}; best {best:.5f} at step "
                     f"{result.best_step}{where}")
    return lines


def _ui_image(path) -> dict:
    """A ComfyUI ui.images entry for a PNG under the output folder."""
    relative = path.relative_to(HOST.output_directory())
    return {"filename": relative.name, "subfolder": relative.parent.as_posix(), "type": "output"}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings([TrainHypernetNode])
