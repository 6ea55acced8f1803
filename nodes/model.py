"""Hypernet Spec, Load, Save and Apply nodes: thin wrappers over hypernet/."""
from __future__ import annotations

import logging

from ..hypernet import spec as hn_spec
from ..hypernet.files import UnsafePathError
from . import comfy_adapter

logger = logging.getLogger(__name__)

_FAMILY_AUTO = "auto (from model)"
_FAMILY_CUSTOM = "custom"
_FAMILIES = [_FAMILY_AUTO, "SD1", "SD2", "SDXL", _FAMILY_CUSTOM]


def _spec_sizes(family: str, custom_sizes: str):
    """Sizes for the chosen family: None for auto, the family's widths, or the parsed custom list."""
    if family == _FAMILY_AUTO:
        return None
    if family == _FAMILY_CUSTOM:
        return hn_spec.parse_sizes(custom_sizes)
    return list(hn_spec.FAMILY_SIZES[family])


def _dropout(layer_structure: list, use_dropout: bool, dropout_structure: str):
    """A1111's UI rule: dropout text only counts with use_dropout; empty text = A1111's legacy 0.3 rule."""
    if not use_dropout:
        return None
    if not dropout_structure.strip():
        return hn_spec.legacy_dropout_structure(layer_structure, True, False)
    return hn_spec.parse_float_list(dropout_structure, "dropout_structure")


class HypernetSpecNode:
    """Describe a new hypernetwork: layer structure, activation, layer norm, dropout, init and
    the attention widths it covers. Shows the parameter count and file size. Defaults are A1111's."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "target_family": (_FAMILIES, {"default": _FAMILY_AUTO, "tooltip": "Which attention widths get modules: the model's own at training time (auto), a family's (SD1 768/320/640/1280, SD2 1024/..., SDXL 2048/640/1280) or your list (custom)."}),
            "custom_sizes": ("STRING", {"default": "768, 320, 640, 1280", "tooltip": "Attention widths for target_family = custom, comma-separated."}),
            "layer_structure": ("STRING", {"default": "1, 2, 1", "tooltip": "Width multipliers of the MLP layers; must start and end with 1 (e.g. 1, 2, 1 or 1, 1.5, 1)."}),
            "activation": (hn_spec.activation_names(), {"default": "linear", "tooltip": "Activation after each hidden layer (swish is Hardswish, as in A1111)."}),
            "weight_init": (list(hn_spec.WEIGHT_INITS), {"default": "Normal", "tooltip": "A1111's weight initialisation. Normal = N(0, 0.01)."}),
            "layer_norm": ("BOOLEAN", {"default": False, "tooltip": "Add LayerNorm after every Linear (A1111 'Add layer normalization')."}),
            "use_dropout": ("BOOLEAN", {"default": False, "tooltip": "Enable dropout during training (never active at inference)."}),
            "dropout_structure": ("STRING", {"default": "0, 0, 0", "tooltip": "Dropout probability per layer_structure entry (first unused). Empty = A1111's legacy 0.3 on hidden layers."}),
            "activate_output": ("BOOLEAN", {"default": False, "tooltip": "Also apply the activation after the output layer (A1111 saves False; deep nets learn badly with it on)."}),
            "init_seed": ("INT", {"default": 0, "min": -1, "max": 0xFFFFFFFF, "tooltip": "Seed for the initial weights; -1 = unseeded global RNG like A1111."}),
        }}

    RETURN_TYPES = ("HYPERNET_SPEC",)
    RETURN_NAMES = ("hypernet_spec",)
    OUTPUT_TOOLTIPS = ("The hypernetwork's architecture, for the trainer.",)
    FUNCTION = "make_spec"
    CATEGORY = "hypernetwork/model"
    OUTPUT_NODE = True
    DESCRIPTION = __doc__

    def make_spec(self, target_family, custom_sizes, layer_structure, activation, weight_init,
                  layer_norm, use_dropout, dropout_structure, activate_output, init_seed):
        try:
            structure = hn_spec.parse_layer_structure(layer_structure)
            spec = hn_spec.HypernetSpec(
                layer_structure=structure, activation=activation, layer_norm=layer_norm,
                dropout_structure=_dropout(structure, use_dropout, dropout_structure),
                weight_init=weight_init, activate_output=activate_output,
                sizes=_spec_sizes(target_family, custom_sizes), init_seed=None if init_seed < 0 else init_seed)
        except ValueError as exc:
            raise ValueError(f"Hypernet Spec: {exc}") from exc
        if spec.sizes is None:
            text = "widths from the model at training time; on SD1: " + hn_spec.describe_size(spec, hn_spec.FAMILY_SIZES["SD1"])
        else:
            text = hn_spec.describe_size(spec)
        return {"ui": {"text": [text]}, "result": (spec,)}


class LoadHypernetNode:
    """Load a hypernetwork file (A1111 .pt or .safetensors) from the hypernetworks folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "hypernetwork_name": (comfy_adapter.list_models("hypernetworks"), {"tooltip": "A file in models/hypernetworks (.pt from A1111/ComfyUI or our .safetensors)."}),
        }}

    RETURN_TYPES = ("HYPERNETWORK",)
    RETURN_NAMES = ("hypernetwork",)
    OUTPUT_TOOLTIPS = ("The loaded hypernetwork; set its strength on Apply Hypernet.",)
    FUNCTION = "load"
    CATEGORY = "hypernetwork/model"
    DESCRIPTION = __doc__

    @classmethod
    def IS_CHANGED(cls, hypernetwork_name):
        """Reload when the file changes on disk (e.g. a training run overwrote it)."""
        try:
            stat = comfy_adapter.resolve_model("hypernetworks", hypernetwork_name).stat()
        except (FileNotFoundError, TypeError):
            return hypernetwork_name
        return f"{hypernetwork_name}:{stat.st_mtime_ns}:{stat.st_size}"

    def load(self, hypernetwork_name):
        from ..hypernet.file_format import HypernetFileError, load_hypernetwork

        path = comfy_adapter.resolve_model("hypernetworks", hypernetwork_name)
        try:
            return (load_hypernetwork(path),)
        except HypernetFileError as exc:
            raise ValueError(f"Load Hypernet (hypernetwork_name={hypernetwork_name!r}): {exc}") from exc


class SaveHypernetNode:
    """Save a hypernetwork into the hypernetworks folder as A1111 .pt or .safetensors. Never
    overwrites silently: a counter is added unless overwrite is on."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "hypernetwork": ("HYPERNETWORK", {"tooltip": "The hypernetwork to save."}),
            "filename": ("STRING", {"default": "my_hypernet", "tooltip": "Name inside models/hypernetworks, subfolders allowed (a/b); no '..' or absolute paths."}),
            "format": (["pt", "safetensors"], {"default": "pt", "tooltip": "pt = A1111 format, readable by A1111 and ComfyUI; safetensors = this pack only."}),
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing file of the same name instead of adding a counter."}),
        }}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written file.",)
    FUNCTION = "save"
    CATEGORY = "hypernetwork/model"
    OUTPUT_NODE = True
    DESCRIPTION = __doc__

    def save(self, hypernetwork, filename, format, overwrite):
        from ..hypernet.file_format import save_hypernetwork, save_target

        try:
            target = save_target(comfy_adapter.model_save_folder("hypernetworks"), filename, format, overwrite)
        except UnsafePathError as exc:
            raise ValueError(f"Save Hypernet (filename={filename!r}): {exc}") from exc
        path = save_hypernetwork(hypernetwork, target, format=format, remember_filename=False)
        logger.info("saved hypernetwork %r to %s", hypernetwork.name, path)
        return {"ui": {"text": [str(path)]}, "result": (str(path),)}


class ApplyHypernetNode:
    """Patch a hypernetwork into the model's attention (self and cross). Chain several Apply
    nodes to stack hypernetworks, each with its own strength."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model to patch (it is cloned, never changed)."}),
            "hypernetwork": ("HYPERNETWORK", {"tooltip": "From Load Hypernet or a trainer."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01, "tooltip": "Multiplier m in y = x + f(x)*m (A1111's <hypernet:name:m>); 0 leaves the model unchanged."}),
        }}

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A patched clone of the model.",)
    FUNCTION = "apply"
    CATEGORY = "hypernetwork/model"
    DESCRIPTION = __doc__

    def apply(self, model, hypernetwork, strength):
        from ..hypernet.patch import apply_hypernetwork

        try:
            return (apply_hypernetwork(model, hypernetwork, strength),)
        except TypeError as exc:
            raise ValueError(f"Apply Hypernet (model): {exc}") from exc


NODE_CLASS_MAPPINGS = {
    "HN_HypernetSpec": HypernetSpecNode,
    "HN_LoadHypernet": LoadHypernetNode,
    "HN_SaveHypernet": SaveHypernetNode,
    "HN_ApplyHypernet": ApplyHypernetNode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HN_HypernetSpec": "Hypernet Spec",
    "HN_LoadHypernet": "Load Hypernet",
    "HN_SaveHypernet": "Save Hypernet",
    "HN_ApplyHypernet": "Apply Hypernet",
}
