"""A1111-exact hypernetwork modules and the `Hypernetwork` container (the HYPERNETWORK type).

Math (docs/file-format.md, The module): each attention width d gets two residual MLPs, one for the
input of to_k and one for the input of to_v: y = x + f(x) * m. The multiplier m (the user's
strength) applies only in eval mode; training always uses 1, as A1111 does. f is a
torch.nn.Sequential named `linear` so state-dict keys are `linear.{idx}.weight|bias`, where idx
counts parameter-free layers (activations, dropout) too.
"""
from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import torch

from .spec import HypernetSpec, activation_class, parse_sizes


class HypernetworkModule(torch.nn.Module):
    """One residual MLP, built layer for layer like A1111's HypernetworkModule.

    Per Linear i (0..n-2): Linear(int(d*ls[i]) -> int(d*ls[i+1])); the activation unless it is
    "linear" or (i is the output Linear and not activate_output); LayerNorm if layer_norm (after
    the output Linear too); Dropout(ds[i+1]) if ds[i+1] > 0."""

    def __init__(self, dim: int, spec: HypernetSpec, initialise: bool = True):
        super().__init__()
        self.dim = int(dim)
        self.multiplier = 1.0
        structure, dropouts = spec.layer_structure, spec.validated_dropout_structure
        activation = activation_class(spec.activation)
        layers: list[torch.nn.Module] = []
        for i in range(len(structure) - 1):
            fan_in, fan_out = int(dim * structure[i]), int(dim * structure[i + 1])
            layers.append(torch.nn.Linear(fan_in, fan_out))
            is_output_linear = i >= len(structure) - 2
            if activation is not None and not (is_output_linear and not spec.activate_output):
                layers.append(activation())
            if spec.layer_norm:
                layers.append(torch.nn.LayerNorm(fan_out))
            if dropouts[i + 1] > 0:
                layers.append(torch.nn.Dropout(p=dropouts[i + 1]))
        self.linear = torch.nn.Sequential(*layers)
        if initialise:
            self._initialise(spec.weight_init, spec.activation)

    def _initialise(self, weight_init: str, activation: str) -> None:
        """A1111's init: biases 0; LayerNorm gamma ~ N(0, 0.01) whatever the choice (its quirk).

        Where A1111 draws the weight from N(0, 0.01) it zeroes the bias with normal_(std=0),
        which still consumes the RNG; doing the same keeps seeded weights equal to A1111's."""
        nonlinearity: Literal["leaky_relu", "relu"] = "leaky_relu" if activation == "leakyrelu" else "relu"
        with torch.no_grad():
            for layer in self.linear:
                if not isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm)):
                    continue
                weight, bias = layer.weight, layer.bias
                if weight_init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                    torch.nn.init.normal_(weight, mean=0.0, std=0.01)
                    torch.nn.init.normal_(bias, mean=0.0, std=0.0)
                    continue
                if weight_init == "XavierUniform":
                    torch.nn.init.xavier_uniform_(weight)
                elif weight_init == "XavierNormal":
                    torch.nn.init.xavier_normal_(weight)
                elif weight_init == "KaimingUniform":
                    torch.nn.init.kaiming_uniform_(weight, nonlinearity=nonlinearity)
                elif weight_init == "KaimingNormal":
                    torch.nn.init.kaiming_normal_(weight, nonlinearity=nonlinearity)
                else:
                    raise KeyError(f"unknown weight_init {weight_init!r}")
                torch.nn.init.zeros_(bias)

    def forward(self, x: torch.Tensor, multiplier: Optional[float] = None) -> torch.Tensor:
        """x + f(x) * m, with m = `multiplier` (or self.multiplier) in eval and 1 in training."""
        if self.training:
            m = 1.0
        else:
            m = self.multiplier if multiplier is None else multiplier
        return x + self.linear(x) * m


def _new_module_pair(dim: int, spec: HypernetSpec, initialise: bool) -> tuple[HypernetworkModule, HypernetworkModule]:
    """The (k, v) modules for one width, created k first then v (A1111's RNG order).

    Built outside inference mode so the weights stay trainable even when a node creates them
    while ComfyUI runs the prompt under torch.inference_mode()."""
    with torch.inference_mode(False):
        return HypernetworkModule(dim, spec, initialise), HypernetworkModule(dim, spec, initialise)


class Hypernetwork:
    """A set of (k, v) module pairs keyed by attention width, plus A1111's metadata.

    This is what flows between nodes as HYPERNETWORK. Layers keep A1111's insertion order
    (the order of `spec.sizes`), which is also the order written to files."""

    def __init__(self, name: str, spec: HypernetSpec,
                 layers: "OrderedDict[int, tuple[HypernetworkModule, HypernetworkModule]]",
                 step: int = 0, sd_checkpoint: Optional[str] = None,
                 sd_checkpoint_name: Optional[str] = None, optional_info: Optional[str] = None):
        self.name = name
        self.spec = spec
        self.layers: "OrderedDict[int, tuple[HypernetworkModule, HypernetworkModule]]" = OrderedDict(layers)
        self.step = int(step)
        self.sd_checkpoint = sd_checkpoint
        self.sd_checkpoint_name = sd_checkpoint_name
        self.optional_info = optional_info
        # Non-A1111 top-level keys found in or destined for the file (A1111 and ComfyUI ignore them).
        self.extra_metadata: dict = {}
        self.filename: Optional[str] = None  # the file it was loaded from or last saved to

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, spec: HypernetSpec, sizes: Optional[Sequence[int]] = None,
              seed: Optional[int] = None, name: str = "hypernet") -> "Hypernetwork":
        """Fresh weights for `sizes` (default spec.sizes) with A1111's init.

        With a seed (argument, else spec.init_seed) the global RNG is forked and seeded, so the
        weights equal what A1111 makes after `torch.manual_seed(seed)`; without one the global
        RNG is used unseeded, as in A1111."""
        sizes = list(sizes) if sizes is not None else spec.sizes
        if sizes is None:
            raise ValueError(f"hypernetwork {name!r}: the spec takes its sizes from the model; pass sizes")
        sizes = parse_sizes(sizes)  # the widths with_sizes stores, in the order the modules are made
        spec = spec.with_sizes(sizes)
        seed = seed if seed is not None else spec.init_seed
        rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with rng:
            if seed is not None:
                torch.manual_seed(int(seed))
            layers = OrderedDict((dim, _new_module_pair(dim, spec, initialise=True)) for dim in sizes)
        hypernetwork = cls(name, spec, layers)
        hypernetwork.eval()
        return hypernetwork

    @classmethod
    def from_module_states(cls, name: str, spec: HypernetSpec,
                           states: "OrderedDict[int, tuple[dict, dict]]", **metadata: Any) -> "Hypernetwork":
        """Rebuild modules from the spec and load each state dict strictly (as A1111 does)."""
        layers = OrderedDict()
        for dim, (state_k, state_v) in states.items():
            pair = _new_module_pair(int(dim), spec, initialise=False)
            for module, state, half in ((pair[0], state_k, "k"), (pair[1], state_v, "v")):
                try:
                    with torch.inference_mode(False):
                        module.load_state_dict(state, strict=True)
                except RuntimeError as exc:
                    raise ValueError(
                        f"hypernetwork {name!r}: the weights for width {dim} ({half}) do not match the "
                        f"metadata (layer_structure {spec.layer_structure}, activation {spec.activation!r}, "
                        f"layer_norm {spec.layer_norm}, dropout_structure {spec.dropout_structure}): {exc}"
                    ) from exc
            layers[int(dim)] = pair
        hypernetwork = cls(name, spec.with_sizes(list(layers)), layers, **metadata)
        hypernetwork.eval()
        return hypernetwork

    # ------------------------------------------------------------------ torch-like API
    @property
    def sizes(self) -> list[int]:
        """Attention widths this hypernetwork has modules for, in file order."""
        return list(self.layers)

    def modules(self) -> Iterator[HypernetworkModule]:
        """Every module, k then v, width by width."""
        for pair in self.layers.values():
            yield from pair

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """All trainable parameters (LayerNorm included, as A1111 trains them)."""
        for module in self.modules():
            yield from module.parameters()

    def train(self, mode: bool = True) -> "Hypernetwork":
        """Training mode: dropout on, multiplier ignored (1)."""
        for module in self.modules():
            module.train(mode)
        return self

    def eval(self) -> "Hypernetwork":
        """Inference mode: dropout off, multiplier applied."""
        return self.train(False)

    @property
    def training(self) -> bool:
        """True when the modules are in training mode."""
        return any(module.training for module in self.modules())

    def to(self, device: Optional[Union[str, torch.device]] = None,
           dtype: Optional[torch.dtype] = None) -> "Hypernetwork":
        """Move (and optionally cast) every module in place; returns self."""
        for module in self.modules():
            module.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        """Device of the weights (CPU for an empty network)."""
        for parameter in self.parameters():
            return parameter.device
        return torch.device("cpu")

    def requires_grad_(self, requires_grad: bool = True) -> "Hypernetwork":
        """Toggle gradients on every parameter."""
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def copy(self) -> "Hypernetwork":
        """A deep copy (weights included), for nodes that must not mutate their input.

        Made outside inference mode, so the copy is trainable even when the original was
        loaded while ComfyUI's prompt ran under torch.inference_mode()."""
        with torch.inference_mode(False):
            return copy.deepcopy(self)

    def state_for_file(self) -> dict:
        """The A1111 `.pt` dict: int width -> (k_state, v_state), then metadata in A1111's order.

        Tensors are detached fp32 contiguous CPU copies; a NaN or inf anywhere raises ValueError."""
        state: dict = {}
        for dim, (module_k, module_v) in self.layers.items():
            state[int(dim)] = (_file_state(module_k, self.name, dim, "k"), _file_state(module_v, self.name, dim, "v"))
        spec = self.spec
        state["step"] = int(self.step)
        state["name"] = str(self.name)
        state["layer_structure"] = [float(m) for m in spec.layer_structure]
        state["activation_func"] = spec.activation
        state["is_layer_norm"] = bool(spec.layer_norm)
        state["weight_initialization"] = spec.weight_init
        state["sd_checkpoint"] = self.sd_checkpoint
        state["sd_checkpoint_name"] = self.sd_checkpoint_name
        state["activate_output"] = bool(spec.activate_output)
        state["use_dropout"] = bool(spec.use_dropout)
        # A1111 writes integer zeros when dropout is off and the parsed floats otherwise.
        dropouts = spec.validated_dropout_structure
        state["dropout_structure"] = [float(p) for p in dropouts] if spec.use_dropout else [0] * len(dropouts)
        state["last_layer_dropout"] = bool(spec.last_layer_dropout)
        state["optional_info"] = self.optional_info if self.optional_info else None
        return state

    def __repr__(self) -> str:
        spec = self.spec
        return (f"Hypernetwork({self.name!r}, sizes={self.sizes}, layer_structure={spec.layer_structure}, "
                f"activation={spec.activation!r}, layer_norm={spec.layer_norm}, step={self.step})")


def _file_state(module: HypernetworkModule, name: str, dim: int, half: str) -> "OrderedDict[str, torch.Tensor]":
    """A module's state dict as fp32 contiguous CPU tensors, refusing non-finite values."""
    state = OrderedDict()
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
        if not torch.isfinite(tensor).all():
            raise ValueError(f"hypernetwork {name!r}: {dim}.{half}.{key} contains NaN or inf; refusing to save it")
        state[key] = tensor
    return state
