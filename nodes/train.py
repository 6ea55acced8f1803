"""Train Hypernet (dataset -> latents -> train -> file): the A1111-parity trainer as one node.
The work is in hypernet/train; widget defaults come from TrainConfig."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..hypernet.errors import InputError
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
from ..hypernet.train.logs import check_log_target
from ..hypernet.train.optimizer import parse_optimizer_args, plain_rate
from ..hypernet.train.run_files import RunFolders
from ..hypernet.train.schedule import parse_schedule
from ..hypernet.train.templates import CUSTOM, TEMPLATE_SETS, template_lines
from .host import HOST, TRAINING_FOLDER
from .widgets import Node, boolean, combo, decimal, integer, mappings, single_values, socket, text, validation

logger = logging.getLogger(__name__)

EVENT = "hypernet.train_step"
EVENT_INTERVAL_S = 0.25
MAX_SEED = 0xFFFFFFFFFFFFFFFF
MAX_STEPS = 10_000_000  # the steps inputs' maximum; a schedule's syntax is checked against it too
_default = TrainConfig.default

TRAIN_INPUTS = {
    "model": socket("MODEL", "The checkpoint's MODEL: SD1, SD2 (eps or v prediction) or SDXL base."),
    "clip": socket("CLIP", "The checkpoint's CLIP; each distinct prompt is encoded once and cached."),
    "vae": socket("VAE", "The checkpoint's VAE; every image is encoded once and cached."),
    "images": socket("IMAGE", "Training images (a list from the dataset nodes; sizes may differ)."),
    "captions": socket("STRING", "One caption per image; becomes [filewords].", forceInput=True),
    "name": text("my-hypernet", "Name of the network: the file name and [name] in templates."),
    "steps": integer(_default("steps"), 1, MAX_STEPS, "Train until this many optimizer steps are done (a "
                                                       "continued network counts on)."),
    "learning_rate": text(_default("learning_rate"), "A1111 schedule: a rate, or 'rate:step, rate:step, rate' "
                                                     "(e.g. 5e-5:100, 5e-6:1500, 5e-7)."),
    "batch_size": integer(_default("batch_size"), 1, 256, "Images per micro-batch (same-size bucket)."),
    "gradient_accumulation": integer(_default("gradient_accumulation"), 1, 1024, "Micro-batches per optimizer "
                                                                                 "step; the loss is divided by it."),
    "optimizer": combo(OPTIMIZERS, "torch.optim optimizer with torch's defaults (A1111 uses AdamW).",
                       _default("optimizer")),
    "clip_grad_mode": combo(CLIP_MODES, "Gradient clipping: off, by value, or by norm.", _default("clip_grad_mode")),
    "clip_grad_value": text(_default("clip_grad_value"), "Clipping value, as a schedule string like the "
                                                         "learning rate."),
    "seed": integer(_default("seed"), 0, MAX_SEED, "Seed for noise, timesteps, batch order, prompts and a new "
                                                   "network's weights."),
    "prompt_template": combo(TEMPLATE_SETS + (CUSTOM,), "Template set (A1111's six) or 'custom' to use "
                                                        "custom_template.", "style_filewords"),
    "custom_template": text("a picture of [filewords], by [name]", "Custom template lines ([name], [filewords]); "
                                                                   "used when prompt_template is custom.", True),
    "shuffle_tags": boolean(_default("shuffle_tags"), "Shuffle the comma-separated caption tags for every use."),
    "tag_dropout": decimal(_default("tag_dropout"), 0.0, 0.95, "Probability of dropping each caption tag for "
                                                               "every use.", 0.05),
    "latent_sampling": combo(LATENT_SAMPLING_MODES, "once: one VAE sample cached; deterministic: the mean; random: "
                                                    "a fresh sample each use.", _default("latent_sampling")),
    "use_alpha_weight": boolean(_default("use_alpha_weight"), "Weight the loss by the image alpha (from masks: "
                                                              "1 = transparent counts 0)."),
    "resolution": integer(512, 64, 2048, "Training side length; images keep their aspect in buckets of about "
                                         "resolution² pixels.", 64),
    "aspect_buckets": boolean(True, "On: cover-and-crop into aspect buckets. Off: stretch to resolution² (A1111)."),
    "save_every": integer(_default("save_every"), 0, 1_000_000, "Save name-STEP.pt (+ .optim with optimizer and "
                                                                "RNG state) every N steps; 0 = only at the end."),
    "preview_every": integer(_default("preview_every"), 0, 1_000_000, "Sample a preview image every N steps; "
                                                                      "0 = never."),
    "preview_prompt": text(_default("preview_prompt"), "Prompt for previews; empty = the first training prompt.",
                           True),
    "preview_seed": integer(_default("preview_seed"), 0, MAX_SEED, "Seed of the preview noise."),
    "preview_steps": integer(_default("preview_steps"), 1, 150, "Sampling steps per preview (euler, normal "
                                                                "schedule, cfg 7, as KSampler)."),
    "csv_every": integer(_default("csv_every"), 0, 1_000_000, "Write a hypernetwork_loss.csv row every N steps; "
                                                              "0 = no CSV."),
    "precision": combo(PRECISIONS, "Autocast dtype; weights stay fp32 (fp16 uses a GradScaler).",
                       _default("precision")),
    "gradient_checkpointing": boolean(_default("gradient_checkpointing"), "Recompute UNet activations in "
                                                                          "backward: less memory, slower."),
    "offload_encoders": boolean(_default("offload_encoders"), "Move VAE and CLIP off the training device once "
                                                              "everything is cached."),
}
# Widgets added after the first release are optional, so that saved workflows (UI and API format)
# keep every old value in its place and get these at their defaults.
NEW_WIDGETS = {
    "overwrite": boolean(_default("overwrite"), "Replace the files of an earlier run of this name. Off: a name "
                                                "that has results gets the next number (NAME_00001), as Save "
                                                "Hypernet does; continuing a run from its own step file is kept."),
    "lr_scheduler": combo(LR_SCHEDULERS, "a1111: the learning_rate schedule string. Others (learning_rate = the "
                                         "peak rate): constant/linear/cosine with a warmup, or cosine with restarts.",
                          _default("lr_scheduler")),
    "warmup_steps": integer(_default("warmup_steps"), 0, MAX_STEPS, "Steps the rate rises linearly from 0 "
                                                                     "(schedulers other than a1111)."),
    "restart_cycle_steps": integer(_default("restart_cycle_steps"), 0, MAX_STEPS, "cosine_with_restarts: "
                                   "steps of the first cycle; 0 = the whole run after the warmup."),
    "restart_cycle_mult": integer(_default("restart_cycle_mult"), 1, 100, "cosine_with_restarts: each cycle is "
                                                                          "this many times longer than the last."),
    "min_learning_rate": decimal(_default("min_learning_rate"), 0.0, 1.0, "cosine_with_restarts: the rate at "
                                                                          "the bottom of each cycle.", 1e-7),
    "weight_decay": decimal(_default("weight_decay"), -1.0, 10.0, "Optimizer weight decay; -1 = the optimizer's "
                                                                  "own default (AdamW 0.01, as A1111).", 0.001),
    "optimizer_args": text(_default("optimizer_args"), "More optimizer options, e.g. 'betas=0.9,0.99 eps=1e-8' "
                                                       "(names as in torch.optim; empty = torch's defaults)."),
    "loss_type": combo(LOSS_TYPES, "mse (A1111), l1, huber or smooth_l1.", _default("loss_type")),
    "min_snr_gamma": decimal(_default("min_snr_gamma"), 0.0, 100.0, "Min-SNR-gamma loss weighting (5 is "
                                                                    "common); 0 = off (A1111).", 0.5),
    "noise_offset": decimal(_default("noise_offset"), 0.0, 1.0, "Offset noise (0.05-0.1 helps very dark or "
                                                                "bright pictures); 0 = off (A1111).", 0.01),
    "validation_split": decimal(_default("validation_split"), 0.0, 0.9, "Fraction of the images held out for the "
                                                                        "validation loss (chosen from the seed).",
                                0.05),
    "validation_every": integer(_default("validation_every"), 1, 1_000_000, "Compute the validation loss every "
                                                                            "N steps (and at the end)."),
    "preview_seeds": text(_default("preview_seeds"), "Several preview seeds, e.g. '1, 2, 3': with one "
                                                     "preview_prompt per line the previews are a prompt x seed "
                                                     "grid. Empty = preview_seed."),
    "log_to": combo(LOG_TARGETS, "Also log to TensorBoard (needs the tensorboard extra) under the run's folder.",
                    _default("log_to")),
}
OPTIONAL_INPUTS = {
    "hypernet_spec": socket("HYPERNET_SPEC", "Architecture for a new network."),
    "hypernetwork": socket("HYPERNETWORK", "A network to continue (its .optim beside the file resumes exactly)."),
    "masks": socket("MASK", "Masks parallel to the images, for use_alpha_weight."),
    "validation_images": socket("IMAGE", "A held-out set for the validation loss (instead of validation_split)."),
    "validation_captions": socket("STRING", "Captions of the validation images.", forceInput=True),
}


OUTPUTS = (("hypernetwork", "HYPERNETWORK", "The trained network."),
           ("loss_curve", "IMAGE", "Loss, validation loss and learning rate per step."),
           ("previews", "IMAGE", "Preview grids (prompts x seeds)."),
           ("saved_path", "STRING", "Path of the saved .pt."),
           ("validation_loss", "FLOAT", "The last validation loss (NaN without validation)."))


class NodeHooks(TrainHooks):
    """ProgressBar every step, interrupt check, throttled hypernet.train_step events."""

    def __init__(self, total: int, node_id):
        self.node_id, self.bar, self.last_event = node_id, HOST.progress_bar(total, node_id), 0.0

    def should_stop(self) -> bool:
        return HOST.interrupt_requested()

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
    return TrainConfig.from_values(widgets, name=validate_name(widgets["name"]),
                                   templates=template_lines(widgets["prompt_template"], widgets["custom_template"]))


def check_choice(input_name: str, value, choices) -> None:
    """A combo that VALIDATE_INPUTS names is not checked by ComfyUI: check it here."""
    if value is not None and value not in choices:
        raise InputError(input_name, f"{value!r} is not one of {', '.join(choices)}")


def host_arguments(config: TrainConfig, node_id) -> dict[str, Any]:
    """What run_training takes from the host: progress hooks, device, loader, folders, processes."""
    return {"hooks": NodeHooks(config.steps, node_id), "device": HOST.torch_device(),
            "load_model": HOST.load_model_for_training, "folders": run_folders(config.overwrite),
            "processes": HOST.training_processes()}


def run_folders(overwrite: bool) -> RunFolders:
    """Final files in the hypernetworks folder; step files, previews and CSV under the output folder."""
    return RunFolders(HOST.model_folders("hypernetworks")[0], HOST.output_directory() / TRAINING_FOLDER, overwrite)


def check_text_inputs(name, learning_rate, clip_grad_mode, clip_grad_value, prompt_template, custom_template,
                      lr_scheduler=None, optimizer=None, optimizer_args=None, preview_seeds=None, log_to=None) -> None:
    """What VALIDATE_INPUTS can check without a model: names, schedules, templates, options."""
    if name is not None:
        validate_name(name)
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
    OUTPUT_IS_LIST = (False, False, True, False, False)
    OUTPUT_NODE = True
    RUNS_ON_EVERY_PROCESS = True  # under torchrun each process trains its share (the runtime's executor)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(TRAIN_INPUTS), "optional": {**OPTIONAL_INPUTS, **NEW_WIDGETS},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def VALIDATE_INPUTS(cls, name, learning_rate, clip_grad_mode, clip_grad_value, prompt_template, custom_template,
                        optimizer, optimizer_args=None, preview_seeds=None, lr_scheduler=None, log_to=None):
        values = single_values({key: value for key, value in locals().items() if key != "cls"})
        return validation(lambda: check_text_inputs(**values))

    def train(self, model, clip, vae, images, captions, hypernet_spec=None, hypernetwork=None, masks=None,
              validation_images=None, validation_captions=None, unique_id=None, **widgets):
        from ..hypernet.train.session import TrainingData, run_training

        w = {key: value[0] for key, value in widgets.items()}
        node_id = unique_id[0] if unique_id else None
        data = TrainingData(_items(images), list(captions), [m.clone() for m in masks] if masks else None,
                            _items(validation_images or []), list(validation_captions or []))
        with torch.inference_mode(False), torch.enable_grad():
            config = train_config(w)
            outputs = run_training(model[0], clip[0], vae[0], data, config, hypernet_spec[0] if hypernet_spec else None,
                                   hypernetwork[0] if hypernetwork else None, **host_arguments(config, node_id))
        if outputs.result.interrupted:
            HOST.throw_if_interrupted()
        return _node_output(config, outputs)


def _items(images: list) -> list:
    """IMAGE batches split into single pictures (copies: the node never changes its inputs)."""
    return [image[i:i + 1].clone() for image in images for i in range(image.shape[0])]


def _node_output(config: TrainConfig, outputs) -> dict:
    """The node's text, the pictures shown on it, and its outputs."""
    result = outputs.result
    last = f"last loss {result.losses[-1]:.5f}" if result.losses else "no steps run"
    shown = [p for p in [outputs.loss_curve_path, *result.preview_paths] if p is not None]
    lines = [f"{outputs.run_name}: step {result.hypernetwork.step}, {last}, saved {result.final_path}"]
    if result.validation_losses:
        best = min(result.validation_losses)
        where = f" ({result.best_path})" if result.best_path else ""
        lines.append(f"validation loss {result.validation_losses[-1]:.5f}; best {best:.5f} at step "
                     f"{result.best_step}{where}")
    val_loss = result.validation_losses[-1] if result.validation_losses else float("nan")
    return {"ui": {"text": [*lines, *outputs.notes], "images": [_ui_image(p) for p in shown]},
            "result": (result.hypernetwork, outputs.loss_curve, result.previews, str(result.final_path), val_loss)}


def _ui_image(path) -> dict:
    """A ComfyUI ui.images entry for a PNG under the output folder."""
    relative = path.relative_to(HOST.output_directory())
    return {"filename": relative.name, "subfolder": relative.parent.as_posix(), "type": "output"}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings([TrainHypernetNode])
