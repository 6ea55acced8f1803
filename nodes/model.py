"""Hypernetwork nodes (file -> apply): Hypernet Spec, Load, Save and Apply Hypernet."""
from __future__ import annotations

import logging

from ..hypernet import spec as hn_spec
from ..hypernet.errors import InputError
from ..hypernet.files import UnsafePathError, check_name_text, natural_key
from ..hypernet.input_values import check_choice
from .host import HOST
from .widgets import Node, boolean, combo, decimal, files, integer, mappings, socket, text, validation

logger = logging.getLogger(__name__)

CATEGORY = "hypernetwork/model"
FAMILY_AUTO, FAMILY_CUSTOM = "auto (from model)", "custom"
FAMILIES = [FAMILY_AUTO, "SD1", "SD2", "SDXL", FAMILY_CUSTOM]

SPEC_INPUTS = {
    "target_family": combo(FAMILIES,
                           tooltip="Which attention widths get modules: the model's own at training time (auto), a "
                                   "family's (SD1 768/320/640/1280, SD2 1024/..., SDXL 2048/640/1280) or your list "
                                   "(custom)."),
    "custom_sizes": text(default="768, 320, 640, 1280",
                         tooltip="Attention widths for target_family = custom, comma-separated."),
    "layer_structure": text(default="1, 2, 1",
                            tooltip="Width multipliers of the MLP layers; must start and end with 1 (e.g. 1, 2, 1 or "
                                    "1, 1.5, 1)."),
    "activation": None,  # filled in INPUT_TYPES: torch's activation list
    "weight_init": combo(hn_spec.WEIGHT_INITS, tooltip="A1111's weight initialisation. Normal = N(0, 0.01)."),
    "layer_norm": boolean(default=False, tooltip="Add LayerNorm after every Linear (A1111 'Add layer normalization')."),
    "use_dropout": boolean(default=False, tooltip="Enable dropout during training (never active at inference)."),
    "dropout_structure": text(default="0, 0, 0",
                              tooltip="Dropout probability per layer_structure entry (first unused). Empty = A1111's "
                                      "legacy 0.3 on hidden layers."),
    "activate_output": boolean(default=False,
                               tooltip="Also apply the activation after the output layer (A1111 saves False; deep "
                                       "nets learn badly with it on)."),
    "init_seed": integer(default=0, min=-1, max=0xFFFFFFFF,
                         tooltip="Seed for the initial weights; -1 = unseeded global RNG like A1111."),
}


def build_spec(target_family, custom_sizes, layer_structure, activation, weight_init, layer_norm, use_dropout,
               dropout_structure, activate_output, init_seed) -> "hn_spec.HypernetSpec":
    """The HypernetSpec the widget values describe (A1111's UI rules for dropout)."""
    structure = hn_spec.parse_layer_structure(layer_structure)
    dropout = None
    if use_dropout:
        dropout = (hn_spec.parse_float_list(dropout_structure, "dropout_structure") if dropout_structure.strip()
                   else hn_spec.legacy_dropout_structure(structure, True, False))
    return hn_spec.HypernetSpec(layer_structure=structure, activation=activation, layer_norm=layer_norm,
                                dropout_structure=dropout, weight_init=weight_init, activate_output=activate_output,
                                sizes=_family_sizes(target_family, custom_sizes),
                                init_seed=None if init_seed < 0 else init_seed)


def _family_sizes(target_family: str, custom_sizes: str):
    """None for auto (the model decides), the family's widths, or the parsed custom list."""
    if target_family == FAMILY_AUTO:
        return None
    if target_family != FAMILY_CUSTOM:
        return list(hn_spec.FAMILY_SIZES[target_family])
    try:
        return hn_spec.parse_sizes(custom_sizes)
    except InputError as exc:
        raise InputError("custom_sizes", exc.message) from None


def check_spec_text(target_family, custom_sizes, layer_structure, use_dropout, dropout_structure) -> None:
    """What the spec's text inputs say is usable (linked inputs, None, are checked when they arrive)."""
    if target_family is not None:
        check_choice("target_family", target_family, FAMILIES)
        if custom_sizes is not None:
            _family_sizes(target_family, custom_sizes)
    if layer_structure is None:
        return
    structure = hn_spec.parse_layer_structure(layer_structure)
    if use_dropout and dropout_structure is not None and dropout_structure.strip():
        hn_spec.validate_dropout_structure(hn_spec.parse_float_list(dropout_structure, "dropout_structure"),
                                           structure)


class HypernetSpecNode(Node):
    """Describe a new hypernetwork: layer structure, activation, layer norm, dropout, init and
    the attention widths it covers. Shows the parameter count and file size. Defaults are A1111's."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_HypernetSpec", "Hypernet Spec", CATEGORY, "make_spec"
    RETURN_TYPES = ("HYPERNET_SPEC",)
    RETURN_NAMES = ("hypernet_spec",)
    OUTPUT_TOOLTIPS = ("The hypernetwork's architecture, for the trainer.",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        activation = combo(hn_spec.activation_names(), default="linear",
                           tooltip="Activation after each hidden layer (swish is Hardswish, as in A1111).")
        return {"required": {**SPEC_INPUTS, "activation": activation}}

    @classmethod
    def VALIDATE_INPUTS(cls, target_family, custom_sizes, layer_structure, use_dropout, dropout_structure):
        return validation(lambda: check_spec_text(target_family, custom_sizes, layer_structure, use_dropout,
                                                  dropout_structure))

    def make_spec(self, **widgets):
        spec = build_spec(**widgets)
        if spec.sizes is not None:
            return {"ui": {"text": [hn_spec.describe_size(spec, spec.sizes)]}, "result": (spec,)}
        described = "; ".join(f"on {family}: {hn_spec.describe_size(spec, hn_spec.FAMILY_SIZES[family])}"
                              for family in ("SD1", "SDXL"))
        return {"ui": {"text": ["widths from the model at training time; " + described]}, "result": (spec,)}


def hypernetwork_file(name: str):
    """The file Load Hypernet reads; the error names the folders searched and what to do."""
    try:
        check_name_text(name)
    except UnsafePathError as exc:
        raise InputError("hypernetwork_name", str(exc)) from None
    try:
        return HOST.resolve_model("hypernetworks", name)
    except FileNotFoundError:
        folders = ", ".join(str(f) for f in HOST.model_folders("hypernetworks"))
        raise InputError("hypernetwork_name", f"{name!r} not found; looked in {folders}. Put an A1111 .pt (or this "
                                              "pack's .safetensors) there, or train one with Train Hypernet") from None


class LoadHypernetNode(Node):
    """Load a hypernetwork file (A1111 .pt or .safetensors) from the hypernetworks folder."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_LoadHypernet", "Load Hypernet", CATEGORY, "load"
    RETURN_TYPES = ("HYPERNETWORK",)
    RETURN_NAMES = ("hypernetwork",)
    OUTPUT_TOOLTIPS = ("The loaded hypernetwork; set its strength on Apply Hypernet.",)

    @classmethod
    def INPUT_TYPES(cls):
        # Natural order, so that a run's step files list as -5, -10, -15 (not -10, -15, -5).
        names = sorted(HOST.list_models("hypernetworks"), key=natural_key)
        return {"required": {"hypernetwork_name": files(names,
                                                        tooltip="A file in models/hypernetworks (.pt from "
                                                                "A1111/ComfyUI or our .safetensors).")}}

    @classmethod
    def VALIDATE_INPUTS(cls, hypernetwork_name):
        return validation(lambda: hypernetwork_name is None or hypernetwork_file(hypernetwork_name))

    @classmethod
    def IS_CHANGED(cls, hypernetwork_name):
        """Reload when the file changes on disk (e.g. a training run overwrote it)."""
        try:
            stat = HOST.resolve_model("hypernetworks", hypernetwork_name).stat()
        except (FileNotFoundError, TypeError):
            return hypernetwork_name
        return f"{hypernetwork_name}:{stat.st_mtime_ns}:{stat.st_size}"

    def load(self, hypernetwork_name):
        from ..hypernet.file_format import HypernetFileError, load_hypernetwork

        try:
            return (load_hypernetwork(hypernetwork_file(hypernetwork_name)),)
        except HypernetFileError as exc:
            raise InputError("hypernetwork_name", str(exc)) from None


def save_path(filename: str, format: str, overwrite: bool):
    """Where Save Hypernet writes: inside the hypernetworks folder, never over a file unless asked."""
    from ..hypernet.file_format import save_target

    try:
        return save_target(HOST.model_folders("hypernetworks")[0], filename, format, overwrite)
    except UnsafePathError as exc:
        raise InputError("filename", str(exc)) from None


class SaveHypernetNode(Node):
    """Save a hypernetwork into the hypernetworks folder as A1111 .pt or .safetensors. Never
    overwrites silently: a counter is added unless overwrite is on."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_SaveHypernet", "Save Hypernet", CATEGORY, "save"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written file.",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "hypernetwork": socket("HYPERNETWORK", tooltip="The hypernetwork to save."),
            "filename": text(default="my_hypernet",
                             tooltip="Name inside models/hypernetworks, subfolders allowed (a/b); no '..' or "
                                     "absolute paths."),
            "format": combo(["pt", "safetensors"],
                            tooltip="pt = A1111 format, readable by A1111 and ComfyUI; safetensors = this pack only."),
            "overwrite": boolean(default=False,
                                 tooltip="Replace an existing file of the same name instead of adding a counter."),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, filename):
        return validation(lambda: filename is None or save_path(filename, "pt", True))

    def save(self, hypernetwork, filename, format, overwrite):
        from ..hypernet.file_format import save_hypernetwork

        target = save_path(filename, format, overwrite)
        path = save_hypernetwork(hypernetwork, target, format=format, remember_filename=False)
        HOST.wrote(path)
        return {"ui": {"text": [str(path)]}, "result": (str(path),)}


class ApplyHypernetNode(Node):
    """Patch a hypernetwork into the model's attention (self and cross). Chain several Apply
    nodes to stack hypernetworks, each with its own strength."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_ApplyHypernet", "Apply Hypernet", CATEGORY, "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A patched clone of the model.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": socket("MODEL", tooltip="The diffusion model to patch (it is cloned, never changed)."),
            "hypernetwork": socket("HYPERNETWORK", tooltip="From Load Hypernet or a trainer."),
            "strength": decimal(default=1.0, min=-10.0, max=10.0, step=0.01,
                                tooltip="Multiplier m in y = x + f(x)*m (A1111's <hypernet:name:m>); 0 leaves the "
                                        "model unchanged."),
        }}

    def apply(self, model, hypernetwork, strength):
        from ..hypernet.patch import apply_hypernetwork

        def show(warning: str) -> None:  # on the node (and as a line headless), besides the log
            HOST.send_progress_text(warning, HOST.current_node_id())

        try:
            return (apply_hypernetwork(model, hypernetwork, strength, warn=show),)
        except TypeError as exc:
            raise InputError("model", str(exc)) from None


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(
    [HypernetSpecNode, LoadHypernetNode, SaveHypernetNode, ApplyHypernetNode])
