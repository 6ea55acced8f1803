"""WD14 (SmilingWolf) ONNX taggers through onnxruntime, offline, one cached session.

Files: `<name>.onnx` plus its tag table, `<name>.csv` beside it or `selected_tags.csv` in
the same folder (header tag_id,name,category,count; category 9 = rating, 0 = general,
4 = character). Semantics follow pysssss' WD14 node (docs/preprocessing.md): longest side
resized to the model's input size, centred on white, float 0..255 BGR NHWC; general tags
by `threshold`, characters by `character_threshold` (strict >), characters first, in CSV
order. onnxruntime is optional (the `wd14` extra) and imported only when tagging."""
from __future__ import annotations

import csv
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
from PIL import Image

from .deepbooru_post import escape_tag

RATING, GENERAL, CHARACTER = 9, 0, 4
WD14_HELP = ("Put a WD14 tagger's model.onnx and selected_tags.csv (e.g. from huggingface.co/SmilingWolf/"
             "wd-v1-4-moat-tagger-v2) into the wd14_tagger models folder, renaming them <name>.onnx and "
             "<name>.csv if you keep several; this pack never downloads models.")


def missing_model_message(name: str, folders: Sequence[Path]) -> str:
    """The error users see when a WD14 model is absent."""
    where = ", ".join(str(f) for f in folders)
    return f"WD14 model {name!r} not found in {where}. {WD14_HELP}"


@dataclass(frozen=True)
class TagRow:
    """One line of the tag table."""

    name: str
    category: int


def tag_table_path(model_path: Path) -> Path:
    """`<model>.csv` if present, else `selected_tags.csv` beside the model."""
    own = model_path.with_suffix(".csv")
    return own if own.is_file() else model_path.parent / "selected_tags.csv"


def read_tag_table(path: Path) -> list[TagRow]:
    """Rows of a WD14 selected_tags.csv."""
    if not path.is_file():
        raise FileNotFoundError(f"WD14 tag table not found: {path}. {WD14_HELP}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "name" not in reader.fieldnames or "category" not in reader.fieldnames:
            raise ValueError(f"WD14 tag table {path} needs the columns name and category")
        return [TagRow(row["name"], int(row["category"])) for row in reader]


@dataclass
class WD14Options:
    """pysssss' defaults."""

    threshold: float = 0.35
    character_threshold: float = 0.85
    replace_underscore: bool = False
    escape: bool = True
    exclude_tags: str = ""
    trailing_comma: bool = False


def format_wd14_tags(probabilities: np.ndarray, rows: list[TagRow], options: WD14Options) -> str:
    """Characters above character_threshold, then general tags above threshold, in table order."""
    if len(probabilities) != len(rows):
        raise ValueError(f"WD14 model gives {len(probabilities)} scores for {len(rows)} tags")
    excluded = {t.strip().lower() for t in options.exclude_tags.split(",") if t.strip()}
    characters, general = [], []
    for row, probability in zip(rows, probabilities):
        if row.category == CHARACTER and probability > options.character_threshold:
            characters.append(row.name)
        elif row.category == GENERAL and probability > options.threshold:
            general.append(row.name)
    tags = []
    for tag in characters + general:
        text = tag.replace("_", " ") if options.replace_underscore else tag
        if text.lower() in excluded or tag.lower() in excluded:
            continue
        tags.append(escape_tag(text) if options.escape else text)
    separator = ", "
    return "".join(t + separator for t in tags) if options.trailing_comma else separator.join(tags)


def prepare_wd14_input(image: Image.Image, size: int) -> np.ndarray:
    """Longest side to `size` (LANCZOS), centred on white, float32 0..255, BGR, HWC."""
    rgb = image.convert("RGB")
    scale = size / max(rgb.size)
    resized = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                         Image.Resampling.LANCZOS)
    square = Image.new("RGB", (size, size), (255, 255, 255))
    square.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return np.asarray(square, dtype=np.float32)[:, :, ::-1].copy()


def _import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("WD14 tagging needs onnxruntime: pip install onnxruntime "
                          "(or onnxruntime-gpu), or the pack's [wd14] extra") from exc
    return onnxruntime


class OnnxInput(Protocol):
    """What WD14Model reads of an onnxruntime NodeArg."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> Sequence[Any]: ...  # an int per fixed dimension, a str or None per dynamic one


class OnnxSession(Protocol):
    """The part of onnxruntime.InferenceSession that WD14Model uses."""

    def get_inputs(self) -> Sequence[OnnxInput]: ...

    def run(self, output_names: Optional[Sequence[str]], input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class WD14Model:
    """An onnxruntime session with its tag table."""

    session: OnnxSession
    rows: list[TagRow]
    path: Path

    @property
    def input_size(self) -> int:
        return int(self.session.get_inputs()[0].shape[1])

    def probabilities(self, images: list[Image.Image], batch_size: int = 8,
                      on_batch: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """[N, tags] scores; batches when the model's batch dimension is dynamic."""
        model_input = self.session.get_inputs()[0]
        fixed_batch = isinstance(model_input.shape[0], int)
        step = 1 if fixed_batch else max(1, batch_size)
        rows = []
        for start in range(0, len(images), step):
            batch = np.stack([prepare_wd14_input(img, self.input_size) for img in images[start:start + step]])
            rows.append(self.session.run(None, {model_input.name: batch})[0])
            if on_batch is not None:
                on_batch(min(len(images), start + step))
        return np.concatenate(rows) if rows else np.zeros((0, len(self.rows)), dtype=np.float32)


_lock = threading.Lock()
_cached: dict[tuple, WD14Model] = {}


def load_wd14(model_path: Path, use_gpu: bool = False) -> WD14Model:
    """One session per model file, reused between runs (pysssss builds one per image)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"WD14 model not found: {model_path}. {WD14_HELP}")
    onnxruntime = _import_onnxruntime()
    stat = model_path.stat()
    key = (str(model_path.resolve()), stat.st_size, stat.st_mtime_ns, use_gpu)
    with _lock:
        if key not in _cached:
            available = onnxruntime.get_available_providers()
            wanted = (["CUDAExecutionProvider"] if use_gpu else []) + ["CPUExecutionProvider"]
            session = onnxruntime.InferenceSession(str(model_path),
                                                   providers=[p for p in wanted if p in available])
            rows = read_tag_table(tag_table_path(model_path))
            _cached.clear()
            _cached[key] = WD14Model(session=session, rows=rows, path=model_path)
        return _cached[key]


def tag_images_wd14(model: WD14Model, images: list[Image.Image], options: WD14Options, batch_size: int = 8,
                    on_batch: Optional[Callable[[int], None]] = None) -> list[str]:
    """One caption string per image."""
    return [format_wd14_tags(row, model.rows, options)
            for row in model.probabilities(images, batch_size, on_batch)]
