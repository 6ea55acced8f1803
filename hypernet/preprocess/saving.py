"""Writing a prepared dataset: PNG images plus same-stem `.txt` captions, atomically.

Names are stable (derived from position and stem, never from a counter that depends on what
is already in the folder), so re-running a workflow rewrites the same files. A chunk of a big
folder (chunks.py) is numbered after the chunks saved before it, so the chunks add up to the
folder one run over every picture writes."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from ..files import atomic_path, atomic_write_text
from .chunks import Chunk, ChunkRecord
from .options import SAVE_NAMINGS

_UNSAFE_CHARS = re.compile(r"[^\w.\-]+", re.UNICODE)


@dataclass
class SavedDataset:
    """What Save Dataset wrote."""

    folder: Path
    images: list[Path] = field(default_factory=list)
    captions: list[Path] = field(default_factory=list)
    # Dataset files (.png/.txt) already in the folder that this save did not write: a trainer
    # pointed at the folder would read them too. Never deleted here; the caller warns.
    leftovers: list[Path] = field(default_factory=list)


def safe_stem(stem: str) -> str:
    """A file-name-safe version of a (possibly nested) stem: "a/b c" -> "a_b_c"."""
    cleaned = _UNSAFE_CHARS.sub("_", stem.replace("/", "_").replace("\\", "_")).strip("._")
    return cleaned[:120] or "image"


def dataset_names(count: int, stems: Optional[list[str]], naming: str = "index-stem", first_index: int = 0
                  ) -> list[str]:
    """File stems for `count` images numbered from `first_index`; duplicates get "-1", "-2"... in
    order of appearance."""
    if naming not in SAVE_NAMINGS:
        raise ValueError(f"naming {naming!r}: choose one of {', '.join(SAVE_NAMINGS)}")
    names: list[str] = []
    seen: dict[str, int] = {}  # name -> how many duplicates of it so far
    for index in range(count):
        stem = safe_stem(stems[index]) if stems else "image"
        number = first_index + index
        name = {"index-stem": f"{number:05d}-{stem}", "stem": stem, "index": f"{number:05d}"}[naming]
        if name in seen:
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        else:
            seen[name] = 0
        names.append(name)
    return names


def image_to_png_pil(image: torch.Tensor, mask: Optional[torch.Tensor]) -> Image.Image:
    """RGB, or RGBA with alpha = 1 - mask when the mask has any transparency."""
    rgb = np.round(image.reshape(image.shape[-3:]).detach().float().cpu().clamp(0, 1).numpy() * 255).astype(np.uint8)
    if mask is None:
        return Image.fromarray(rgb, "RGB")
    mask_array = mask.reshape(mask.shape[-2:]).detach().float().cpu().clamp(0, 1).numpy()
    if mask_array.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask_array.shape} does not match image {rgb.shape[:2]}")
    if not mask_array.any():
        return Image.fromarray(rgb, "RGB")
    alpha = np.round((1.0 - mask_array) * 255).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def save_dataset(folder: Path, images: list[torch.Tensor], captions: Optional[list[str]] = None,
                 stems: Optional[list[str]] = None, masks: Optional[list[Optional[torch.Tensor]]] = None,
                 naming: str = "index-stem", on_progress: Optional[Callable[[int], None]] = None,
                 chunk: Optional[Chunk] = None) -> SavedDataset:
    """Write `<name>.png` (+ `<name>.txt` when the caption is non-empty) for every image.

    An empty caption removes a stale `.txt` of the same name, so files never disagree. With a
    `chunk`, names continue the chunks recorded in the folder and this chunk's names are
    recorded after its files; InputError for 'chunk' (before any write) when that cannot be done
    without touching another chunk's files."""
    folder = Path(folder)
    record = ChunkRecord(folder) if chunk is not None else None
    names = _names(record, chunk, len(images), stems, naming)
    folder.mkdir(parents=True, exist_ok=True)
    result = SavedDataset(folder=folder)
    for index, name in enumerate(names):
        picture = image_to_png_pil(images[index], masks[index] if masks else None)
        image_path = folder / f"{name}.png"
        with atomic_path(image_path) as tmp:
            picture.save(tmp, format="PNG")
        result.images.append(image_path)
        caption_path = folder / f"{name}.txt"
        caption = (captions[index] if captions else "").strip()
        if caption:
            atomic_write_text(caption_path, caption)
            result.captions.append(caption_path)
        elif captions is not None and caption_path.exists():
            caption_path.unlink()
        if on_progress is not None:
            on_progress(index + 1)
    if record is not None and chunk is not None:
        record.record(chunk, names)
    others = record.all_names() if record is not None else set()  # the other chunks' files are expected
    written = set(result.images) | set(result.captions)
    result.leftovers = sorted(p for p in folder.iterdir()
                              if p.is_file() and p.suffix.lower() in (".png", ".txt") and p not in written
                              and not p.name.startswith(".") and p.stem not in others)
    return result


def _names(record: Optional[ChunkRecord], chunk: Optional[Chunk], count: int, stems: Optional[list[str]],
           naming: str) -> list[str]:
    """The file stems to write: numbered from 0, or after the chunks recorded before `chunk`."""
    if record is None or chunk is None:
        return dataset_names(count, stems, naming)
    numbered = naming != "stem"
    names = dataset_names(count, stems, naming, record.first_index(chunk, numbered))
    record.check_names(chunk, names, numbered)
    return names
