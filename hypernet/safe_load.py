"""Reading weight files without running their code, with errors that give only safe advice.

Every `.pt`/`.ckpt`/`.pth`/`.bin` is read with `torch.load(weights_only=True)`; safetensors files
with the safetensors library. Their own error texts are not passed on as they are: torch's
suggests re-running with `weights_only=False` or allow-listing globals (both would run code from
the file), carries terminal escape codes, or quotes the file's first bytes. `UnreadableFile`
says which file and, in plain words, why."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .files import PathLike

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Sentences of torch's and safetensors' texts that advise an unsafe step or repeat the obvious.
_UNSAFE_ADVICE = re.compile(r"weights_only|safe_globals|allowlist|trust|arbitrary code|file an issue", re.IGNORECASE)


class UnreadableFile(ValueError):
    """A weight file that cannot be read safely; the message names the file and the reason."""


def safe_reason(exc: BaseException) -> str:
    """The reason in an exception's text, without unsafe advice, escape codes or file bytes."""
    text = _ANSI_ESCAPE.sub("", str(exc))
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    kept = [s.strip() for s in sentences if s.strip() and not _UNSAFE_ADVICE.search(s)]
    reason = " ".join(kept[:2]).strip()
    if reason.startswith(("invalid load key", "Unsupported operand")):
        # Both quote a byte of the file: say what it means instead.
        return "not a torch file (neither a zip archive nor a pickle of plain data)"
    return reason or type(exc).__name__


def load_torch_weights(path: PathLike, what: str = "weights") -> Any:
    """torch.load(path, weights_only=True) on the CPU; UnreadableFile on any refusal."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnreadableFile(f"{path}: refused to read {what}: it holds more than plain tensors and data, and "
                             f"files are only read without running code ({safe_reason(exc)})") from None
    except Exception as exc:  # torch's weights_only unpickler raises many types on foreign data
        raise UnreadableFile(f"{path}: cannot read {what}: not a complete torch file ({safe_reason(exc)})") from None


def load_safetensors(path: PathLike, what: str = "weights") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header metadata) of a safetensors file; UnreadableFile if it is malformed."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            return {key: handle.get_tensor(key) for key in handle.keys()}, metadata
    except Exception as exc:  # safetensors raises its own error types (SafetensorError, OSError...)
        raise UnreadableFile(f"{path}: cannot read {what}: not a valid safetensors file "
                             f"({safe_reason(exc)})") from None


def check_safetensors_header(path: PathLike, what: str = "weights") -> None:
    """Read only the header of a safetensors file (cheap: for validation before any work)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 2 <= size <= min(100_000_000, path.stat().st_size - 8):
                raise ValueError("the header length does not fit the file")
            header = json.loads(handle.read(size))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UnreadableFile(f"{path}: cannot read {what}: not a valid safetensors file "
                             f"({safe_reason(exc)})") from None
