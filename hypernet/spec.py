"""What a hypernetwork looks like before it has weights: `HypernetSpec` and its arithmetic.

The fields mirror the metadata an A1111 `.pt` file carries (layer_structure, activation_func,
is_layer_norm, dropout_structure, weight_initialization, activate_output) plus the two things
A1111 decides elsewhere: which attention widths get modules (`sizes`) and the RNG seed used to
initialise them (`init_seed`; A1111 uses the global torch RNG unseeded).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional, Sequence, Union

import torch

from .errors import InputError

# Attention input widths per model family: the text-context width first (cross-attention),
# then the self-attention widths of the UNet's transformer blocks. SD1 is A1111's default set.
FAMILY_SIZES: dict[str, list[int]] = {
    "SD1": [768, 320, 640, 1280],
    "SD2": [1024, 320, 640, 1280],
    "SDXL": [2048, 640, 1280],
}

WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")

# Activations torch.nn offers but that cannot work as A1111 builds them (class called with no
# arguments, output width equal to input width, no weights of its own).
REFUSED_ACTIVATIONS: dict[str, str] = {
    "threshold": "torch.nn.Threshold needs threshold and value arguments, which the file format cannot carry",
    "glu": "torch.nn.GLU halves the width, so the next Linear layer no longer fits",
    "prelu": "torch.nn.PReLU has its own weight, which A1111's key layout does not account for",
    "multiheadattention": "torch.nn.MultiheadAttention is not an activation function",
}


def _torch_activation_classes() -> dict[str, type]:
    """Every class defined in torch.nn.modules.activation, by lower-case name (as A1111 does)."""
    module = torch.nn.modules.activation
    return {
        name.lower(): cls
        for name, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__
    }


def activation_classes() -> dict[str, Optional[type]]:
    """Usable activations by name -> class (None = no activation layer, i.e. "linear").

    A1111's base map wins over torch's names: "swish" is Hardswish there (and in ComfyUI),
    not SiLU."""
    classes: dict[str, Optional[type]] = {
        name: cls for name, cls in _torch_activation_classes().items() if name not in REFUSED_ACTIVATIONS
    }
    classes.update({
        "linear": None,
        "relu": torch.nn.ReLU,
        "leakyrelu": torch.nn.LeakyReLU,
        "elu": torch.nn.ELU,
        "swish": torch.nn.Hardswish,
        "tanh": torch.nn.Tanh,
        "sigmoid": torch.nn.Sigmoid,
    })
    return classes


def activation_names() -> list[str]:
    """Activation names for a UI combo: A1111's UI order first, then the rest alphabetically."""
    first = ["linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid"]
    rest = sorted(set(activation_classes()) - set(first))
    return first + rest


def activation_class(name: Optional[str]) -> Optional[type]:
    """The torch.nn class for activation `name` (None for linear/None); ValueError with the reason."""
    if name is None:
        return None
    key = str(name).strip().lower()
    if key in REFUSED_ACTIVATIONS:
        raise InputError("activation", f"{name!r} is not supported: {REFUSED_ACTIVATIONS[key]}")
    classes = activation_classes()
    if key not in classes:
        raise InputError("activation", f"unknown activation {name!r}; choose one of: {', '.join(activation_names())}")
    return classes[key]


def parse_float_list(value: Union[str, Iterable[float]], what: str) -> list[float]:
    """Floats from "1, 2, 1" text or any iterable of numbers."""
    if isinstance(value, str):
        items = [item.strip() for item in value.replace(";", ",").split(",")]
        items = [item for item in items if item]
        try:
            return [float(item) for item in items]
        except ValueError as exc:
            raise InputError(what, f"expected comma-separated numbers like '1, 2, 1', got {value!r}") from exc
    try:
        return [float(item) for item in value]
    except (TypeError, ValueError) as exc:
        raise InputError(what, f"expected a list of numbers, got {value!r}") from exc


def parse_layer_structure(value: Union[str, Iterable[float]]) -> list[float]:
    """Layer multipliers from "1, 2, 1" or a list; the first and last must be 1."""
    structure = parse_float_list(value, "layer_structure")
    if len(structure) < 2:
        raise InputError("layer_structure", f"needs at least two entries (e.g. '1, 2, 1'), got {value!r}")
    if structure[0] != 1 or structure[-1] != 1:
        raise InputError("layer_structure", f"must start and end with 1 (e.g. '1, 2, 1'), got {value!r}")
    if any(not math.isfinite(m) or m <= 0 for m in structure):
        raise InputError("layer_structure", f"multipliers must be positive numbers, got {value!r}")
    return structure


def parse_sizes(value: Union[str, Iterable[int]]) -> list[int]:
    """Attention widths from "768, 320, 640, 1280" or a list; positive, distinct, order kept."""
    numbers = parse_float_list(value, "sizes")
    sizes = [int(n) for n in numbers]
    if not sizes:
        raise InputError("sizes", "give at least one attention width, e.g. '768, 320, 640, 1280'")
    if any(n <= 0 or n != s for n, s in zip(numbers, sizes)):
        raise InputError("sizes", f"must be positive whole numbers, got {value!r}")
    if len(set(sizes)) != len(sizes):
        raise InputError("sizes", f"must not repeat, got {value!r}")
    return sizes


def legacy_dropout_structure(layer_structure: Sequence[float], use_dropout: bool,
                             last_layer_dropout: bool) -> list[float]:
    """A1111's dropout_structure for files that carry only use_dropout / last_layer_dropout.

    No dropout: all zeros. Otherwise 0.3 after every hidden Linear except the one before the
    output, which gets 0.3 only with last_layer_dropout, and never after the output Linear."""
    count = len(layer_structure)
    if not use_dropout:
        return [0] * count
    return [0] + [0.3] * (count - 3) + [0.3 if last_layer_dropout else 0] + [0]


def validate_dropout_structure(dropout_structure: Sequence[float], layer_structure: Sequence[float]) -> list[float]:
    """Check A1111's rules: one entry per layer_structure entry, each 0 or strictly between 0 and 1."""
    values = parse_float_list(dropout_structure, "dropout_structure")
    if len(values) != len(layer_structure):
        raise InputError("dropout_structure",
            f"dropout_structure needs {len(layer_structure)} entries (one per layer_structure entry), "
            f"got {len(values)}: {list(dropout_structure)!r}")
    for p in values[1:]:
        if p != 0 and not 0 < p < 1:
            raise InputError("dropout_structure", f"probabilities must be 0 or between 0 and 1, got {p!r}")
    return values


@dataclass
class HypernetSpec:
    """The architecture and initialisation of a hypernetwork, without weights.

    `dropout_structure[j]` (j >= 1) is the probability of a Dropout after Linear j-1 (A1111);
    entry 0 is unused. `sizes=None` means "the model's attention widths when training starts"."""

    layer_structure: list[float] = field(default_factory=lambda: [1.0, 2.0, 1.0])
    activation: str = "linear"
    layer_norm: bool = False
    dropout_structure: Optional[list[float]] = None
    weight_init: str = "Normal"
    activate_output: bool = False
    sizes: Optional[list[int]] = field(default_factory=lambda: list(FAMILY_SIZES["SD1"]))
    init_seed: Optional[int] = None

    def __post_init__(self) -> None:
        self.layer_structure = parse_layer_structure(self.layer_structure)
        self.activation = "linear" if self.activation is None else str(self.activation).strip().lower()
        activation_class(self.activation)
        if self.dropout_structure is None:
            self.dropout_structure = [0] * len(self.layer_structure)
        self.dropout_structure = validate_dropout_structure(self.dropout_structure, self.layer_structure)
        if self.weight_init not in WEIGHT_INITS:
            raise InputError("weight_init", f"unknown {self.weight_init!r}; choose one of {', '.join(WEIGHT_INITS)}")
        if self.sizes is not None:
            self.sizes = parse_sizes(self.sizes)
        self.layer_norm = bool(self.layer_norm)
        self.activate_output = bool(self.activate_output)

    @property
    def validated_dropout_structure(self) -> list[float]:
        """dropout_structure as __post_init__ left it: one entry per layer_structure entry
        (None, the constructor's "no dropout", has become zeros by then)."""
        if self.dropout_structure is None:
            raise ValueError("dropout_structure was set to None after construction; use dataclasses.replace")
        return self.dropout_structure

    @property
    def use_dropout(self) -> bool:
        """A1111's use_dropout flag: true when any dropout probability is set."""
        return any(p != 0 for p in self.validated_dropout_structure)

    @property
    def last_layer_dropout(self) -> bool:
        """A1111 writes this as dropout_structure[-2] != 0."""
        return self.validated_dropout_structure[-2] != 0

    def with_sizes(self, sizes: Iterable[int]) -> "HypernetSpec":
        """A copy with explicit attention widths (e.g. the model's, when sizes was None)."""
        return replace(self, sizes=list(sizes), layer_structure=list(self.layer_structure),
                       dropout_structure=list(self.validated_dropout_structure))

    def layer_widths(self, dim: int) -> list[int]:
        """Feature width after each entry of layer_structure for an input of width `dim` (A1111 truncates)."""
        return [int(dim * m) for m in self.layer_structure]


def module_parameter_count(spec: HypernetSpec, dim: int) -> int:
    """Parameters of one HypernetworkModule (the k or the v half) for width `dim`."""
    widths = spec.layer_widths(dim)
    total = 0
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        total += fan_in * fan_out + fan_out
        if spec.layer_norm:
            total += 2 * fan_out
    return total


def _explicit_sizes(spec: HypernetSpec, sizes: Optional[Iterable[int]], caller: str) -> list[int]:
    """`sizes` if given, else the spec's; ValueError when the spec leaves them to the model."""
    if sizes is not None:
        return list(sizes)
    if spec.sizes is None:
        raise ValueError(f"{caller}: the spec takes its sizes from the model; pass sizes explicitly")
    return spec.sizes


def parameter_count(spec: HypernetSpec, sizes: Optional[Iterable[int]] = None) -> int:
    """Total parameters over all widths, k and v modules both."""
    return sum(2 * module_parameter_count(spec, dim) for dim in _explicit_sizes(spec, sizes, "parameter_count"))


# torch.save zip overhead: a fixed part (archive, pickle, metadata) plus a per-tensor part
# (zip entry, storage record, 64-byte alignment). Measured on torch 2.x; the tests keep it honest.
_FILE_OVERHEAD_BYTES = 2048
_FILE_OVERHEAD_PER_TENSOR = 256


def tensor_count(spec: HypernetSpec, sizes: Optional[Iterable[int]] = None) -> int:
    """How many tensors (weights and biases) the file holds."""
    sizes = _explicit_sizes(spec, sizes, "tensor_count")
    per_linear = 4 if spec.layer_norm else 2
    return len(sizes) * 2 * per_linear * (len(spec.layer_structure) - 1)


def file_size_bytes(spec: HypernetSpec, sizes: Optional[Iterable[int]] = None) -> int:
    """Estimated size of the `.pt` file: fp32 weights plus torch.save's container overhead."""
    sizes = _explicit_sizes(spec, sizes, "file_size_bytes")
    params = parameter_count(spec, sizes)
    return 4 * params + _FILE_OVERHEAD_BYTES + _FILE_OVERHEAD_PER_TENSOR * tensor_count(spec, sizes)


def describe_size(spec: HypernetSpec, sizes: Optional[Iterable[int]] = None) -> str:
    """One line for the UI: widths, parameter count and file size in MiB."""
    sizes = _explicit_sizes(spec, sizes, "describe_size")
    params = parameter_count(spec, sizes)
    mib = 4 * params / (1024 * 1024)
    widths = ", ".join(str(s) for s in sizes)
    return f"{params:,} parameters, {mib:.2f} MiB (widths {widths})"
