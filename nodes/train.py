"""Train Hypernet: the A1111-parity trainer as one node. The work is in hypernet/train."""
from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from ..hypernet.files import safe_join
from ..hypernet.train.config import CLIP_MODES, OPTIMIZERS, PRECISIONS, TrainConfig, TrainHooks, validate_name
from ..hypernet.train.templates import CUSTOM, TEMPLATE_SETS, template_lines
from . import comfy_adapter as host

_LATENT_SAMPLING = ("once", "deterministic", "random")
_EVENT = "hypernet.train_step"
_EVENT_INTERVAL_S = 0.25


def _w(kind: str, default: Any, tooltip: str, **options: Any) -> tuple:
    """A widget spec with its tooltip."""
    return (kind, {"default": default, "tooltip": tooltip, **options})


def _c(options, default: str, tooltip: str) -> tuple:
    """A combo spec with its tooltip."""
    return (list(options), {"default": default, "tooltip": tooltip})


_REQUIRED = {
    "model": ("MODEL", {"tooltip": "The checkpoint's MODEL (SD1/SD2 style, eps or v prediction)."}),
    "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP; each distinct prompt is encoded once and cached."}),
    "vae": ("VAE", {"tooltip": "The checkpoint's VAE; every image is encoded once and cached."}),
    "images": ("IMAGE", {"tooltip": "Training images (a list from the dataset nodes; sizes may differ)."}),
    "captions": ("STRING", {"forceInput": True, "tooltip": "One caption per image; becomes [filewords]."}),
    "name": _w("STRING", "my-hypernet", "Name of the network: the file name and [name] in templates."),
    "steps": _w("INT", 2000, "Train until this many optimizer steps are done (a continued network counts on).", min=1, max=10_000_000),
    "learning_rate": _w("STRING", "0.00001", "A1111 schedule: a rate, or 'rate:step, rate:step, rate' (e.g. 5e-5:100, 5e-6:1500, 5e-7)."),
    "batch_size": _w("INT", 1, "Images per micro-batch (same-size bucket).", min=1, max=256),
    "gradient_accumulation": _w("INT", 1, "Micro-batches per optimizer step; the loss is divided by it.", min=1, max=1024),
    "optimizer": _c(OPTIMIZERS, "AdamW", "torch.optim optimizer with torch's defaults (A1111 uses AdamW)."),
    "clip_grad_mode": _c(CLIP_MODES, "disabled", "Gradient clipping: off, by value, or by norm."),
    "clip_grad_value": _w("STRING", "0.1", "Clipping value, as a schedule string like the learning rate."),
    "seed": _w("INT", 0, "Seed for noise, timesteps, batch order, prompts and a new network's weights.", min=0, max=0xFFFFFFFFFFFFFFFF),
    "prompt_template": _c(TEMPLATE_SETS + (CUSTOM,), "style_filewords", "Template set (A1111's six) or 'custom' to use custom_template."),
    "custom_template": _w("STRING", "a picture of [filewords], by [name]", "Custom template lines ([name], [filewords]); used when prompt_template is custom.", multiline=True),
    "shuffle_tags": _w("BOOLEAN", False, "Shuffle the comma-separated caption tags for every use."),
    "tag_dropout": _w("FLOAT", 0.0, "Probability of dropping each caption tag for every use.", min=0.0, max=0.95, step=0.05),
    "latent_sampling": _c(_LATENT_SAMPLING, "once", "once: one VAE sample cached; deterministic: the mean; random: a fresh sample each use."),
    "use_alpha_weight": _w("BOOLEAN", False, "Weight the loss by the image alpha (from masks: 1 = transparent counts 0)."),
    "resolution": _w("INT", 512, "Training side length; images keep their aspect in buckets of about resolution² pixels.", min=64, max=2048, step=64),
    "aspect_buckets": _w("BOOLEAN", True, "On: cover-and-crop into aspect buckets. Off: stretch to resolution² (A1111)."),
    "save_every": _w("INT", 500, "Save name-STEP.pt (+ .optim with optimizer and RNG state) every N steps; 0 = only at the end.", min=0, max=1_000_000),
    "preview_every": _w("INT", 500, "Sample a preview image every N steps; 0 = never.", min=0, max=1_000_000),
    "preview_prompt": _w("STRING", "", "Prompt for previews; empty = the first training prompt.", multiline=True),
    "preview_seed": _w("INT", 0, "Seed of the preview noise.", min=0, max=0xFFFFFFFFFFFFFFFF),
    "preview_steps": _w("INT", 20, "Sampling steps per preview (euler, normal schedule, cfg 7, as KSampler).", min=1, max=150),
    "csv_every": _w("INT", 100, "Write a hypernetwork_loss.csv row every N steps; 0 = no CSV.", min=0, max=1_000_000),
    "precision": _c(PRECISIONS, "fp32", "Autocast dtype; weights stay fp32 (fp16 uses a GradScaler)."),
    "gradient_checkpointing": _w("BOOLEAN", False, "Recompute UNet activations in backward: less memory, slower."),
    "offload_encoders": _w("BOOLEAN", True, "Move VAE and CLIP off the training device once everything is cached."),
}


class _NodeHooks(TrainHooks):
    """ProgressBar every step, interrupt check, throttled hypernet.train_step events."""

    def __init__(self, total: int, node_id):
        self.node_id, self.bar, self.last_event = node_id, host.progress_bar(total, node_id), 0.0

    def should_stop(self) -> bool:
        return host.interrupt_requested()

    def on_step(self, step: int, total: int, loss: float, learn_rate: float) -> None:
        now = time.monotonic()
        if now - self.last_event >= _EVENT_INTERVAL_S or step == total:
            self.last_event = now
            host.send_event(_EVENT, {"node": self.node_id, "step": step, "loss": loss, "lr": learn_rate})
        self.bar.update_absolute(step, total)

    def is_interrupt(self, exc: BaseException) -> bool:
        return host.is_interrupt(exc)


class TrainHypernetNode:
    """Train a hypernetwork the way A1111 does (schedule strings, templates, tag shuffle, alpha
    loss weight, buckets), faster and resumable: latents and prompts are encoded once, every
    save holds optimizer and RNG state, NaN stops the run, and an interrupt saves first.
    The result goes to models/hypernetworks/NAME.pt; saves, previews and the loss CSV to
    output/hypernet_training/NAME/."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(_REQUIRED), "optional": {
            "hypernet_spec": ("HYPERNET_SPEC", {"tooltip": "Architecture for a new network."}),
            "hypernetwork": ("HYPERNETWORK", {"tooltip": "A network to continue (its .optim beside the file resumes exactly)."}),
            "masks": ("MASK", {"tooltip": "Masks parallel to the images, for use_alpha_weight."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("HYPERNETWORK", "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("hypernetwork", "loss_curve", "previews", "saved_path")
    OUTPUT_TOOLTIPS = ("The trained network.", "Loss per step.", "Preview images.", "Path of the saved .pt.")
    OUTPUT_IS_LIST = (False, False, True, False)
    FUNCTION = "train"
    CATEGORY = "hypernetwork/train"
    OUTPUT_NODE = True
    DESCRIPTION = __doc__

    def train(self, model, clip, vae, images, captions, hypernet_spec=None, hypernetwork=None, masks=None,
              unique_id=None, **widgets):
        from ..hypernet.train.session import run_training

        w = {key: value[0] for key, value in widgets.items()}
        node_id = unique_id[0] if unique_id else None
        items = [image[i:i + 1] for image in images for i in range(image.shape[0])]
        with torch.inference_mode(False), torch.enable_grad(), _errors_named(node_id):
            name = validate_name(w["name"])
            config = _config(name, w)
            outputs = run_training(model[0], clip[0], vae[0], [i.clone() for i in items], list(captions), config,
                                   w["resolution"], w["aspect_buckets"], masks=[m.clone() for m in masks] if masks else None,
                                   spec=hypernet_spec[0] if hypernet_spec else None,
                                   hypernetwork=hypernetwork[0] if hypernetwork else None,
                                   hooks=_NodeHooks(config.steps, node_id), device=host.torch_device(),
                                   load_model=host.load_model_for_training)
        result = outputs.result
        if result.interrupted:
            host.throw_if_interrupted()
        path = str(result.final_path)
        last = f"last loss {result.losses[-1]:.5f}" if result.losses else "no steps run"
        shown = [p for p in [outputs.loss_curve_path, *result.preview_paths] if p is not None]
        return {"ui": {"text": [f"{name}: step {result.hypernetwork.step}, {last}, saved {path}"],
                       "images": [_ui_image(p) for p in shown]},
                "result": (result.hypernetwork, outputs.loss_curve, result.previews, path)}


def _ui_image(path) -> dict:
    """A ComfyUI ui.images entry for a PNG under the output folder."""
    relative = path.relative_to(host.output_directory())
    return {"filename": relative.name, "subfolder": relative.parent.as_posix(), "type": "output"}


@contextlib.contextmanager
def _errors_named(node_id):
    """Prefix input errors from the library with the node, so the message says where to look."""
    try:
        yield
    except ValueError as exc:
        if str(exc).startswith("Train Hypernet"):
            raise
        raise ValueError(f"Train Hypernet (node {node_id}): {exc}") from exc


def _config(name: str, w: dict) -> TrainConfig:
    """TrainConfig from the widget values, with the node's folders."""
    templates = template_lines(w["prompt_template"], w["custom_template"])
    log_dir = safe_join(host.output_directory(), f"hypernet_training/{name}")
    final_path = safe_join(host.model_save_folder("hypernetworks"), f"{name}.pt")
    keys = ("steps", "learning_rate", "batch_size", "gradient_accumulation", "optimizer", "clip_grad_mode",
            "clip_grad_value", "seed", "shuffle_tags", "tag_dropout", "latent_sampling", "use_alpha_weight",
            "precision", "gradient_checkpointing", "save_every", "preview_every", "preview_prompt", "preview_seed",
            "preview_steps", "csv_every", "offload_encoders")
    return TrainConfig(name=name, templates=templates, log_dir=log_dir, final_path=final_path,
                       **{key: w[key] for key in keys})


NODE_CLASS_MAPPINGS = {"HN_TrainHypernet": TrainHypernetNode}
NODE_DISPLAY_NAME_MAPPINGS = {"HN_TrainHypernet": "Train Hypernet"}
