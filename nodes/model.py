"""Hypernetwork nodes (file -> apply): Hypernet Spec, Hypernet Spec Grid, Load, Save and Apply Hypernet."""
from __future__ import annotations

import logging

from ..hypernet import spec as hn_spec
from ..hypernet.errors import InputError
from ..hypernet.files import UnsafePathError, check_name_text, natural_key
from ..hypernet.input_values import check_choice
from ..hypernet.patch import MAX_STRENGTH, MIN_STRENGTH
from ..hypernet.train.sweep import MAX_SWEEP_SPECS, short_spec
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


LAYER_NORM_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}
NO_DROPOUT, LEGACY_DROPOUT = "none", "legacy"

GRID_INPUTS = {
    "target_family": SPEC_INPUTS["target_family"],
    "custom_sizes": SPEC_INPUTS["custom_sizes"],
    "layer_structures": text(default="1, 2, 1\n1, 2, 2, 1\n1, 1.5, 1.5, 1", multiline=True,
                             tooltip="Layer structures to try, one per line (each as in Hypernet Spec: starts and "
                                     "ends with 1)."),
    "activations": text(default="relu, swish",
                        tooltip="Activations to try, separated by commas (swish is Hardswish, as in A1111)."),
    "layer_norm": combo(list(LAYER_NORM_CHOICES),
                        tooltip="Layer norm off, on, or both (every other combination twice: with and without)."),
    "dropout_structures": text(default="", multiline=True,
                               tooltip="Dropout structures to try, one per line: numbers (one per layer_structure "
                                       "entry; a line goes with the structures of its length), 'none', or 'legacy' "
                                       "(A1111's 0.3 on hidden layers). Empty = no dropout."),
    "weight_init": SPEC_INPUTS["weight_init"],
    "activate_output": SPEC_INPUTS["activate_output"],
    "init_seed": SPEC_INPUTS["init_seed"],
}


def _lines(value: str) -> list[tuple[int, str]]:
    """The non-empty lines of `value` with their line numbers (from 1)."""
    return [(number, line.strip()) for number, line in enumerate(value.splitlines(), start=1) if line.strip()]


def _no_repeats(input_name: str, items: list[tuple[int, str]], key) -> None:
    seen: dict = {}
    for number, item in items:
        if key(item) in seen:
            raise InputError(input_name, f"line {number} ({item!r}) repeats line {seen[key(item)]}")
        seen[key(item)] = number


def grid_structures(layer_structures: str) -> list[tuple[int, str]]:
    """The layer structure lines (number, text), each checked; InputError names the line."""
    lines = _lines(layer_structures)
    if not lines:
        raise InputError("layer_structures", "give at least one layer structure, e.g. '1, 2, 1'")
    for number, line in lines:
        try:
            hn_spec.parse_layer_structure(line)
        except InputError as exc:
            raise InputError("layer_structures", f"line {number} ({line!r}): {exc.message}") from None
    _no_repeats("layer_structures", lines, lambda line: tuple(hn_spec.parse_layer_structure(line)))
    return lines


def grid_activations(activations: str) -> list[str]:
    """The activation names, each one torch and the file format know."""
    names = [name.strip().lower() for name in activations.replace("\n", ",").split(",") if name.strip()]
    if not names:
        raise InputError("activations", "give at least one activation, e.g. 'relu, swish'")
    for name in names:
        try:
            hn_spec.activation_class(name)
        except InputError as exc:
            raise InputError("activations", exc.message) from None
    if len(set(names)) != len(names):
        raise InputError("activations", f"{activations!r} names an activation twice")
    return names


def grid_dropouts(dropout_structures: str) -> list[tuple[int, str]]:
    """The dropout lines (number, text): 'none', 'legacy' or numbers; no lines = one 'none'."""
    lines = _lines(dropout_structures) or [(0, NO_DROPOUT)]
    for number, line in lines:
        if line.lower() not in (NO_DROPOUT, LEGACY_DROPOUT):
            try:
                hn_spec.parse_float_list(line, "dropout_structures")
            except InputError:
                raise InputError("dropout_structures", f"line {number} ({line!r}): give numbers like '0, 0.1, 0', "
                                                       f"'{NO_DROPOUT}' or '{LEGACY_DROPOUT}'") from None
    _no_repeats("dropout_structures", lines, lambda line: line.lower().replace(" ", ""))
    return lines


def _fitting_dropouts(structure: list[float], dropouts: list[tuple[int, str]]) -> list[tuple[bool, str]]:
    """(use_dropout, dropout_structure) for each dropout line that fits `structure`."""
    fitting = []
    for number, line in dropouts:
        if line.lower() in (NO_DROPOUT, LEGACY_DROPOUT):
            fitting.append((line.lower() == LEGACY_DROPOUT, ""))
        elif len(hn_spec.parse_float_list(line, "dropout_structures")) == len(structure):
            try:
                hn_spec.validate_dropout_structure(hn_spec.parse_float_list(line, "dropout_structures"), structure)
            except InputError as exc:
                raise InputError("dropout_structures", f"line {number} ({line!r}): {exc.message}") from None
            fitting.append((True, line))
    return fitting


def grid_plan(layer_structures: str, activations: str, layer_norm: str,
              dropout_structures: str) -> list[tuple[str, str, bool, bool, str]]:
    """Every combination the grid makes, structure by structure: (layer_structure, activation,
    layer_norm, use_dropout, dropout_structure); refused when a line fits nothing or past the cap."""
    check_choice("layer_norm", layer_norm, list(LAYER_NORM_CHOICES))
    structures, names, dropouts = (grid_structures(layer_structures), grid_activations(activations),
                                   grid_dropouts(dropout_structures))
    plan, used = [], set()
    for number, line in structures:
        fitting = _fitting_dropouts(hn_spec.parse_layer_structure(line), dropouts)
        if not fitting:
            raise InputError("dropout_structures", f"no line fits layer structure line {number} ({line!r}): add one "
                                                   f"with {len(hn_spec.parse_layer_structure(line))} numbers, or "
                                                   f"a '{NO_DROPOUT}' line")
        used.update(dropout for _, dropout in fitting)
        plan += [(line, name, norm, use, dropout) for name in names for norm in LAYER_NORM_CHOICES[layer_norm]
                 for use, dropout in fitting]
    unused = [(n, line) for n, line in dropouts
              if line.lower() not in (NO_DROPOUT, LEGACY_DROPOUT) and line not in used]
    if unused:
        raise InputError("dropout_structures", f"line {unused[0][0]} ({unused[0][1]!r}) fits no layer structure "
                                               "(one number per layer_structure entry)")
    if len(plan) > MAX_SWEEP_SPECS:
        raise InputError("layer_structures", f"the grid makes {len(plan)} specs ({len(structures)} layer structures "
                                             f"x {len(names)} activations x layer norm {layer_norm} x dropout lines); "
                                             f"a sweep trains at most {MAX_SWEEP_SPECS} networks in one queue: "
                                             "split it into several grids")
    return plan


def grid_specs(target_family, custom_sizes, layer_structures, activations, layer_norm, dropout_structures,
               weight_init, activate_output, init_seed) -> list["hn_spec.HypernetSpec"]:
    """The specs the grid's widget values describe, in grid_plan's order; refused when two dropout
    lines make the same spec (A1111's legacy dropout on a 3-entry structure is no dropout)."""
    specs = [build_spec(target_family, custom_sizes, structure, activation, weight_init, norm, use_dropout, dropout,
                        activate_output, init_seed)
             for structure, activation, norm, use_dropout, dropout in grid_plan(layer_structures, activations,
                                                                                layer_norm, dropout_structures)]
    for index, spec in enumerate(specs):
        if spec in specs[:index]:
            raise InputError("dropout_structures", f"two lines make the same spec, {short_spec(spec)!r} (legacy "
                                                   "dropout puts 0.3 only on hidden layers before the last, so on a "
                                                   "3-entry structure it is no dropout): remove one")
    return specs


def check_grid_text(target_family, custom_sizes, layer_structures, activations, layer_norm,
                    dropout_structures) -> None:
    """What the grid's text inputs say is usable; linked inputs (None) are checked when they arrive."""
    check_spec_text(target_family, custom_sizes, None, False, None)
    values = (layer_structures, activations, layer_norm, dropout_structures)
    if None not in values:
        grid_specs(FAMILY_AUTO, "", *values, weight_init="Normal", activate_output=False, init_seed=0)
        return
    checks = (grid_structures, grid_activations, lambda value: check_choice("layer_norm", value,
                                                                          list(LAYER_NORM_CHOICES)), grid_dropouts)
    for value, check in zip(values, checks):
        if value is not None:
            check(value)


def describe_specs(specs: list["hn_spec.HypernetSpec"]) -> list[str]:
    """One line per spec for the node: its short text, parameters and file size."""
    lines = [f"{len(specs)} specs, trained one after the other by Train Hypernet (a sweep)"]
    for spec in specs:
        sizes = spec.sizes if spec.sizes is not None else hn_spec.FAMILY_SIZES["SD1"]
        where = "" if spec.sizes is not None else " on SD1"
        lines.append(f"{short_spec(spec)}: {hn_spec.describe_size(spec, sizes)}{where}")
    return lines


class HypernetSpecGridNode(Node):
    """Several hypernetwork specs at once: every layer structure (one per line) with every
    activation, layer norm off/on/both and every dropout line. Train Hypernet trains one network
    per spec (a sweep), named NAME-<spec>; at most MAX_SWEEP_SPECS specs."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_HypernetSpecGrid", "Hypernet Spec Grid", CATEGORY, "make_specs"
    RETURN_TYPES = ("HYPERNET_SPEC",)
    RETURN_NAMES = ("hypernet_specs",)
    OUTPUT_TOOLTIPS = ("The list of specs; Train Hypernet trains one network per spec.",)
    OUTPUT_IS_LIST = (True,)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(GRID_INPUTS)}

    @classmethod
    def VALIDATE_INPUTS(cls, target_family, custom_sizes, layer_structures, activations, layer_norm,
                        dropout_structures):
        return validation(lambda: check_grid_text(target_family, custom_sizes, layer_structures, activations,
                                                  layer_norm, dropout_structures))

    def make_specs(self, **widgets):
        specs = grid_specs(**widgets)
        return {"ui": {"text": describe_specs(specs)}, "result": (specs,)}


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
            "strength": decimal(default=1.0, min=MIN_STRENGTH, max=MAX_STRENGTH, step=0.01,
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
    [HypernetSpecNode, HypernetSpecGridNode, LoadHypernetNode, SaveHypernetNode, ApplyHypernetNode])
