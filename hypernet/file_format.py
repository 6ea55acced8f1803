"""Reading and writing hypernetwork files: A1111 `.pt` (exact layout) and our `.safetensors`.

docs/file-format.md describes both layouts, A1111's defaults for missing metadata, the archive
rule a stock A1111 enforces and where ComfyUI's built-in loader differs. Files are always read
with torch.load(weights_only=True): a pickle that needs any class is refused.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from .files import UnsafePathError, atomic_path, next_free_path, safe_join
from .network import Hypernetwork
from .safe_load import UnreadableFile, load_safetensors, load_torch_weights
from .spec import WEIGHT_INITS, HypernetSpec, legacy_dropout_structure

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

A1111_METADATA_KEYS = (
    "step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
    "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
    "last_layer_dropout", "optional_info",
)
SAFETENSORS_FORMAT = "hypernet-studio.hypernetwork"
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
_LEGACY_KEYS = {"linear1.weight": "linear.0.weight", "linear1.bias": "linear.0.bias",
                "linear2.weight": "linear.1.weight", "linear2.bias": "linear.1.bias"}


class HypernetFileError(ValueError):
    """A file that is not a (safe, readable) hypernetwork."""


def file_format(path: PathLike) -> str:
    """"safetensors" for .safetensors/.sft, else "pt"."""
    return "safetensors" if Path(path).suffix.lower() in SAFETENSORS_SUFFIXES else "pt"


def shorthash(path: PathLike) -> str:
    """A1111's short hash: the first 10 hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:10]


# ---------------------------------------------------------------------------- reading
def read_torch_file(path: Path, what: str) -> Any:
    """torch.load with weights_only=True, turning every refusal into a clear HypernetFileError."""
    try:
        return load_torch_weights(path, what)
    except UnreadableFile as exc:
        raise HypernetFileError(str(exc)) from None


def _width_key(key: Any) -> Optional[int]:
    """The attention width a top-level key stands for (A1111: int keys; also "768"), else None."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return None


def _module_state(value: Any, source: str, dim: int, half: str) -> "OrderedDict[str, torch.Tensor]":
    """One module's state dict, legacy linear1/linear2 keys renamed, tensors as fp32."""
    if not isinstance(value, Mapping):
        raise HypernetFileError(f"{source}: width {dim} ({half}) is {type(value).__name__}, expected a state dict")
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, tensor in value.items():
        if not isinstance(tensor, torch.Tensor):
            raise HypernetFileError(f"{source}: width {dim} ({half}) key {key!r} is not a tensor")
        state[_LEGACY_KEYS[key] if key in _LEGACY_KEYS else key] = tensor.to(torch.float32)
    return state


def hypernetwork_from_state(state: Mapping, name: str, source: str = "<memory>") -> Hypernetwork:
    """Build a Hypernetwork from an A1111-layout dict, filling missing metadata A1111's way."""
    if not isinstance(state, Mapping):
        raise HypernetFileError(f"{source}: not a hypernetwork (top level is {type(state).__name__}, expected a dict)")
    modules, extra = _split_modules_and_extra(state, source)
    spec = _spec_from_metadata(state, list(modules), source)
    try:
        hypernetwork = Hypernetwork.from_module_states(
            str(state.get("name") or name), spec, modules,
            step=int(state.get("step") or 0),
            sd_checkpoint=state.get("sd_checkpoint"),
            sd_checkpoint_name=state.get("sd_checkpoint_name"),
            optional_info=state.get("optional_info"),
        )
    except ValueError as exc:
        raise HypernetFileError(f"{source}: {exc}") from exc
    hypernetwork.extra_metadata = extra
    return hypernetwork


def _split_modules_and_extra(state: Mapping, source: str) -> tuple["OrderedDict[int, tuple]", dict]:
    """The (k, v) state dicts per width, in file order, and the keys neither A1111 nor we know."""
    modules: "OrderedDict[int, tuple]" = OrderedDict()
    extra: dict = {}
    for key, value in state.items():
        dim = _width_key(key)
        if dim is None:
            if key not in A1111_METADATA_KEYS:
                extra[key] = value
            continue
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise HypernetFileError(f"{source}: width {dim} must hold a (k, v) pair of state dicts")
        modules[dim] = (_module_state(value[0], source, dim, "k"), _module_state(value[1], source, dim, "v"))
    if not modules:
        raise HypernetFileError(f"{source}: not a hypernetwork (no attention-width entries such as 768)")
    return modules, extra


def _spec_from_metadata(state: Mapping, sizes: list[int], source: str) -> HypernetSpec:
    """The spec the metadata describes, with A1111's defaults for missing keys (its
    `Hypernetwork.load`): layer_structure [1, 2, 1], no activation, no layer norm, Normal init,
    activate_output True (!), dropout from use_dropout/last_layer_dropout by the legacy rule."""
    layer_structure = state.get("layer_structure") or [1, 2, 1]
    dropout_structure = state.get("dropout_structure")
    if dropout_structure is None:
        dropout_structure = legacy_dropout_structure(layer_structure, bool(state.get("use_dropout", False)),
                                                     bool(state.get("last_layer_dropout", False)))
    else:
        dropout_structure = _dropout_as_a1111_builds_it(dropout_structure, layer_structure, source)
    weight_init = state.get("weight_initialization") or "Normal"
    if weight_init not in WEIGHT_INITS:
        # Only matters for new weights; A1111 never looks at it when loading.
        logger.warning("%s: unknown weight_initialization %r, keeping Normal", source, weight_init)
        weight_init = "Normal"
    try:
        return HypernetSpec(layer_structure=list(layer_structure), activation=state.get("activation_func") or "linear",
                            layer_norm=bool(state.get("is_layer_norm", False)),
                            dropout_structure=list(dropout_structure), weight_init=weight_init,
                            activate_output=bool(state.get("activate_output", True)), sizes=sizes)
    except ValueError as exc:
        raise HypernetFileError(f"{source}: invalid hypernetwork metadata: {exc}") from exc


def _dropout_as_a1111_builds_it(dropout_structure: Any, layer_structure: Any, source: str) -> Any:
    """The dropout A1111 actually builds from a file's list: it reads entries 1..n-1 only and
    adds a Dropout only where p > 0, so longer lists (its UI does not check the length) and
    negative entries load as "no dropout there" instead of being refused."""
    if not isinstance(dropout_structure, (list, tuple)) or not isinstance(layer_structure, (list, tuple)):
        return dropout_structure
    count = len(layer_structure)
    if len(dropout_structure) < count or not all(isinstance(p, (int, float)) for p in dropout_structure):
        return dropout_structure  # refused with a clear message by the spec, as A1111 fails too
    effective = [dropout_structure[0]] + [p if p > 0 else 0 for p in dropout_structure[1:count]]
    if effective != list(dropout_structure):
        logger.info("%s: dropout_structure %s read as %s (the entries A1111 uses)", source,
                    list(dropout_structure), effective)
    return effective


def _read_safetensors(path: Path) -> dict:
    """An A1111-layout dict rebuilt from our safetensors scheme."""
    try:
        tensors, header = load_safetensors(path, "a hypernetwork")
    except UnreadableFile as exc:
        raise HypernetFileError(str(exc)) from None
    if header.get("format") != SAFETENSORS_FORMAT:
        raise HypernetFileError(f"{path}: not a hypernetwork (safetensors header lacks format={SAFETENSORS_FORMAT!r})")
    try:
        metadata = json.loads(header.get("hypernetwork", "{}"))
        extra = json.loads(header.get("extra", "{}"))
    except json.JSONDecodeError as exc:
        raise HypernetFileError(f"{path}: corrupt hypernetwork metadata: {exc}") from exc
    halves: dict[int, tuple[OrderedDict, OrderedDict]] = {}
    for key, tensor in tensors.items():
        dim_text, half, rest = (key.split(".", 2) + ["", ""])[:3]
        if not dim_text.isdigit() or half not in ("k", "v") or not rest:
            raise HypernetFileError(f"{path}: unexpected tensor name {key!r} (expected '768.k.linear.0.weight')")
        pair = halves.setdefault(int(dim_text), (OrderedDict(), OrderedDict()))
        pair[0 if half == "k" else 1][rest] = tensor
    order = [int(d) for d in metadata.pop("sizes", [])] or sorted(halves)
    state: dict = {dim: halves[dim] for dim in order if dim in halves}
    state.update({dim: pair for dim, pair in halves.items() if dim not in state})
    state.update({key: metadata[key] for key in A1111_METADATA_KEYS if key in metadata})
    state.update(extra)
    return state


def load_hypernetwork(path: PathLike) -> Hypernetwork:
    """Load a `.pt` (any A1111 variant) or our `.safetensors` hypernetwork file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hypernetwork file not found: {path}")
    if file_format(path) == "safetensors":
        state = _read_safetensors(path)
    else:
        state = read_torch_file(path, "hypernetwork")
    hypernetwork = hypernetwork_from_state(state, name=path.stem, source=str(path))
    hypernetwork.filename = str(path)
    return hypernetwork


# ---------------------------------------------------------------------------- writing
# The archive entries a stock A1111 accepts (docs/file-format.md); torch writes two more.
A1111_ARCHIVE_ENTRY = re.compile(r"^[^/]+/(data\.pkl|data/\d+|version|byteorder|\.data/serialization_id)$")
_STORAGE_ALIGNMENT = 64  # torch aligns tensor data so that files can be memory-mapped


def write_torch_file(payload: Any, path: PathLike) -> None:
    """torch.save `payload` to `path` as an archive a stock A1111 opens (the caller makes the
    write atomic): the entries its safe loader refuses are left out, tensor data stays aligned."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    Path(path).write_bytes(_a1111_archive(buffer.getvalue()))


def _a1111_archive(archive: bytes) -> bytes:
    """`archive` rewritten with only the entries A1111 allows, each data record aligned as torch
    aligns it (padding in the local header's extra field, as torch itself does)."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            if not A1111_ARCHIVE_ENTRY.match(info.filename):
                continue
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            data_start = out.tell() + 30 + len(info.filename.encode()) + 4
            padding = -data_start % _STORAGE_ALIGNMENT
            entry.extra = struct.pack("<HH", 0x4246, padding) + b"Z" * padding
            target.writestr(entry, source.read(info))
    return out.getvalue()


def _check_extra_metadata(extra: Mapping) -> dict:
    """Extra top-level keys must be plain, non-numeric strings holding weights_only-safe values."""
    checked = {}
    for key, value in extra.items():
        if not isinstance(key, str) or key.isdigit() or key in A1111_METADATA_KEYS:
            raise ValueError(f"extra metadata key {key!r} must be a non-numeric string that is not an A1111 key")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"extra metadata {key!r} must be plain data (str, number, bool, None, list, "
                             "dict)") from exc
        checked[key] = value
    return checked


def _to_safetensors(state: dict, extra: dict) -> tuple[dict, dict]:
    """(tensors, header metadata) for our safetensors scheme."""
    tensors, metadata = {}, {}
    for key, value in state.items():
        if isinstance(key, int):
            for half, module_state in zip(("k", "v"), value):
                for name, tensor in module_state.items():
                    tensors[f"{key}.{half}.{name}"] = tensor
        else:
            metadata[key] = value
    metadata["sizes"] = [key for key in state if isinstance(key, int)]
    header = {"format": SAFETENSORS_FORMAT, "format_version": "1",
              "hypernetwork": json.dumps(metadata), "extra": json.dumps(extra)}
    return tensors, header


def save_hypernetwork(hypernetwork: Hypernetwork, path: PathLike, format: Optional[str] = None,
                      extra_metadata: Optional[Mapping] = None, remember_filename: bool = True) -> Path:
    """Write `hypernetwork` to `path` atomically, as A1111 `.pt` or our `.safetensors`.

    `format` defaults to the file extension. Extra metadata (plain data, non-numeric string
    keys) is appended after A1111's keys; A1111 and ComfyUI ignore such keys. Refuses NaN/inf.
    With `remember_filename` the object's `filename` becomes `path` (a trainer resumes from the
    `.optim` beside it); nodes pass False so that they never modify their input."""
    path = Path(path)
    format = format or file_format(path)
    if format not in ("pt", "safetensors"):
        raise ValueError(f"unknown hypernetwork file format {format!r} (use 'pt' or 'safetensors')")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES + (".pt",) and file_format(path) != format:
        raise ValueError(f"{path}: extension does not match format {format!r}")
    extra = _check_extra_metadata({**hypernetwork.extra_metadata, **(extra_metadata or {})})
    state = hypernetwork.state_for_file()
    with atomic_path(path) as tmp:
        if format == "pt":
            write_torch_file({**state, **extra}, tmp)
        else:
            from safetensors.torch import save_file

            tensors, header = _to_safetensors(state, extra)
            save_file(tensors, str(tmp), metadata=header)
    if remember_filename:
        hypernetwork.filename = str(path)
    return path


def save_target(folder: PathLike, filename: str, format: str, overwrite: bool = False) -> Path:
    """Where a user-named hypernetwork goes: `folder/filename.format`, never outside `folder`.

    A .pt/.safetensors ending is dropped (the format decides it); '..', absolute paths and
    empty or dot-only names are refused with UnsafePathError. Without `overwrite` an existing
    file gets a counter (`name_00001.pt`) instead of being replaced."""
    stem = str(filename).strip()
    for suffix in (".pt",) + SAFETENSORS_SUFFIXES:
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    last = stem.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if last in ("", ".", ".."):
        raise UnsafePathError(f"{filename!r} does not name a file (give a name such as 'my_hypernet' or 'styles/ink')")
    target = safe_join(folder, f"{stem}.{format}")
    return target if overwrite else next_free_path(target.parent, target.stem, target.suffix)


def convert_hypernetwork_file(src: PathLike, dst: PathLike, overwrite: bool = False) -> Path:
    """Convert between `.pt` and `.safetensors` by the destination's extension."""
    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() not in SAFETENSORS_SUFFIXES + (".pt",):
        raise ValueError(f"{dst}: the destination must end in .pt or .safetensors (it picks the format)")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
    if dst.resolve() == src.resolve():
        raise ValueError(f"source and destination are the same file: {src}")
    hypernetwork = load_hypernetwork(src)
    return save_hypernetwork(hypernetwork, dst, format=file_format(dst))
