"""Train Hypernet (dataset -> latents -> train -> file): the A1111-parity trainer as one node.
The work is in hypernet/train; widget defaults come from TrainConfig."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..hypernet.errors import InputError
from ..hypernet.train.config import (
    CLIP_MODES,
    LATENT_SAMPLING_MODES,
    OPTIMIZERS,
    PRECISIONS,
    TrainConfig,
    TrainHooks,
    validate_name,
)
from ..hypernet.train.run_files import RunFolders
from ..hypernet.train.schedule import parse_schedule
from ..hypernet.train.templates import CUSTOM, TEMPLATE_SETS, template_lines
from .host import HOST, TRAINING_FOLDER
from .widgets import Node, boolean, combo, decimal, integer, mappings, single_values, socket, text, validation

logger = logging.getLogger(__name__)

EVENT = "hypernet.train_step"
EVENT_INTERVAL_S = 0.25
MAX_SEED = 0xFFFFFFFFFFFFFFFF
SCHEDULE_CHECK_STEPS = 10_000_000  # the steps input's maximum: a schedule's syntax is checked against it
_default = TrainConfig.default

TRAIN_INPUTS = {
    "model": socket("MODEL", "The checkpoint's MODEL (SD1/SD2 style, eps or v prediction)."),
    "clip": socket("CLIP", "The checkpoint's CLIP; each distinct prompt is encoded once and cached."),
    "vae": socket("VAE", "The checkpoint's VAE; every image is encoded once and cached."),
    "images": socket("IMAGE", "Training images (a list from the dataset nodes; sizes may differ)."),
    "captions": socket("STRING", "One caption per image; becomes [filewords].", forceInput=True),
    "name": text("my-hypernet", "Name of the network: the file name and [name] in templates."),
    "steps": integer(_default("steps"), 1, 10_000_000, "Train until this many optimizer steps are done (a "
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
}
OPTIONAL_INPUTS = {
    "hypernet_spec": socket("HYPERNET_SPEC", "Architecture for a new network."),
    "hypernetwork": socket("HYPERNETWORK", "A network to continue (its .optim beside the file resumes exactly)."),
    "masks": socket("MASK", "Masks parallel to the images, for use_alpha_weight."),
}


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


def run_folders(overwrite: bool) -> RunFolders:
    """Final files in the hypernetworks folder; step files, previews and CSV under the output folder."""
    return RunFolders(HOST.model_folders("hypernetworks")[0], HOST.output_directory() / TRAINING_FOLDER, overwrite)


def check_text_inputs(name, learning_rate, clip_grad_mode, clip_grad_value, prompt_template, custom_template) -> None:
    """What VALIDATE_INPUTS can check without a model: names, schedules, templates."""
    if name is not None:
        validate_name(name)
    if learning_rate is not None:
        parse_schedule(learning_rate, SCHEDULE_CHECK_STEPS, 0, "learning_rate")
    if clip_grad_mode is not None and clip_grad_mode not in CLIP_MODES:
        raise InputError("clip_grad_mode", f"{clip_grad_mode!r} is not one of {', '.join(CLIP_MODES)}")
    if clip_grad_mode not in (None, "disabled") and clip_grad_value is not None:
        parse_schedule(clip_grad_value, SCHEDULE_CHECK_STEPS, 0, "clip_grad_value")
    if prompt_template is not None and (prompt_template != CUSTOM or custom_template is not None):
        template_lines(prompt_template, custom_template or "")


class TrainHypernetNode(Node):
    """Train a hypernetwork the way A1111 does (schedule strings, templates, tag shuffle, alpha loss
    weight, buckets), faster and resumable: latents and prompts are encoded once, every save holds
    optimizer and RNG state, NaN stops the run, and an interrupt saves first. The result goes to
    models/hypernetworks/NAME.pt; saves, previews and the loss CSV to output/hypernet_training/NAME/."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_TrainHypernet", "Train Hypernet", "hypernetwork/train", "train"
    INPUT_IS_LIST = True
    RETURN_TYPES = ("HYPERNETWORK", "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("hypernetwork", "loss_curve", "previews", "saved_path")
    OUTPUT_TOOLTIPS = ("The trained network.", "Loss per step.", "Preview images.", "Path of the saved .pt.")
    OUTPUT_IS_LIST = (False, False, True, False)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(TRAIN_INPUTS), "optional": {**OPTIONAL_INPUTS, **NEW_WIDGETS},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def VALIDATE_INPUTS(cls, name, learning_rate, clip_grad_mode, clip_grad_value, prompt_template, custom_template):
        values = single_values({key: value for key, value in locals().items() if key != "cls"})
        return validation(lambda: check_text_inputs(**values))

    def train(self, model, clip, vae, images, captions, hypernet_spec=None, hypernetwork=None, masks=None,
              unique_id=None, **widgets):
        from ..hypernet.train.session import TrainingData, run_training

        w = {key: value[0] for key, value in widgets.items()}
        node_id = unique_id[0] if unique_id else None
        items = [image[i:i + 1].clone() for image in images for i in range(image.shape[0])]
        data = TrainingData(items, list(captions), [m.clone() for m in masks] if masks else None)
        with torch.inference_mode(False), torch.enable_grad():
            config = train_config(w)
            outputs = run_training(model[0], clip[0], vae[0], data, config, hypernet_spec[0] if hypernet_spec else None,
                                   hypernetwork[0] if hypernetwork else None, NodeHooks(config.steps, node_id),
                                   HOST.torch_device(), HOST.load_model_for_training, run_folders(config.overwrite))
        if outputs.result.interrupted:
            HOST.throw_if_interrupted()
        return _node_output(config, outputs)


def _node_output(config: TrainConfig, outputs) -> dict:
    """The node's text, the pictures shown on it, and its outputs."""
    result = outputs.result
    last = f"last loss {result.losses[-1]:.5f}" if result.losses else "no steps run"
    shown = [p for p in [outputs.loss_curve_path, *result.preview_paths] if p is not None]
    text = f"{outputs.run_name}: step {result.hypernetwork.step}, {last}, saved {result.final_path}"
    return {"ui": {"text": [text, *outputs.notes], "images": [_ui_image(p) for p in shown]},
            "result": (result.hypernetwork, outputs.loss_curve, result.previews, str(result.final_path))}


def _ui_image(path) -> dict:
    """A ComfyUI ui.images entry for a PNG under the output folder."""
    relative = path.relative_to(HOST.output_directory())
    return {"filename": relative.name, "subfolder": relative.parent.as_posix(), "type": "output"}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings([TrainHypernetNode])
