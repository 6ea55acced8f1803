"""Read a folder of training images and their captions, robustly.

Fixes the gaps of A1111's and ComfyUI's loaders: files come in natural order, EXIF
orientation is applied, alpha is composited on a chosen colour and kept as a mask, 16-bit /
palette / CMYK files are converted correctly, and a bad file is skipped with one warning
naming it and the reason instead of stopping the run (or being dropped silently).

`max_side` bounds memory as the folder loads: a larger picture is scaled down (Lanczos, aspect
kept, never up) to fit max_side x max_side before it becomes float, and a JPEG is decoded at a
reduced scale (Pillow's draft mode) so even the decode stays small; 0 keeps every picture at
full size, as A1111 does."""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..files import natural_key
from .chunks import Chunk, select_chunk
from .options import IMAGE_EXTENSIONS
from .workers import imap_in_workers

logger = logging.getLogger(__name__)

_KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")

# max_side: 0 = full size. The default keeps a short side of at least 768 px (the largest usual
# SD1.x training size) for every picture up to 2:1, so Auto Crop never has to scale up there.
MAX_SIDE_DEFAULT, MAX_SIDE_MIN, MAX_SIDE_MAX = 1536, 64, 16384
# ImageOps.exif_transpose's table, applied after the resize (the orientation is read first).
_ORIENTATION_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                          6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                          8: Image.Transpose.ROTATE_90}
# Modes Pillow resizes with Lanczos as they are (RGBA and LA premultiplied by Pillow itself).
_RESIZABLE_MODES = ("RGB", "RGBA", "L", "LA", "F")


@dataclass
class LoadedImage:
    """One picture ready for the graph: RGB float [H,W,3], alpha [H,W] or None, caption."""

    path: Path
    stem: str
    rgb: np.ndarray
    alpha: Optional[np.ndarray]
    caption: str
    repeats: int = 1


@dataclass
class LoadResult:
    """Everything a folder load produced, including one warning line per skipped file."""

    folder: Path
    images: list[LoadedImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chunk: Optional[Chunk] = None  # which chunk of the selected files this load is; None = all of them


def parse_color(color: str) -> tuple[int, int, int]:
    """"white", "black", "gray", "#rrggbb" or "r,g,b" -> an RGB triple (ValueError otherwise)."""
    text = str(color).strip()
    if "," in text:
        parts = [int(p) for p in text.split(",")]
        if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
            raise ValueError(f"background colour {color!r}: expected three 0-255 values")
        return tuple(parts)  # type: ignore[return-value]
    from PIL import ImageColor

    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError as exc:
        raise ValueError(f"background colour {color!r} is not a colour name, #rrggbb or r,g,b") from exc


def _candidate_files(folder: Path, recursive: bool, kohya_folders: bool) -> list[Path]:
    """Every visible file the loader looks at: the folder, all subfolders when `recursive`,
    else also the direct `N_name` subfolders when `kohya_folders` (kohya keeps images there)."""
    if recursive:
        entries = list(folder.rglob("*"))
    else:
        entries = list(folder.iterdir())
        if kohya_folders:
            entries += [p for sub in entries if sub.is_dir() and _KOHYA_FOLDER.match(sub.name)
                        for p in sub.iterdir()]
    return [p for p in entries if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def list_image_files(folder: Path, recursive: bool = False,
                     extensions: tuple[str, ...] = IMAGE_EXTENSIONS, kohya_folders: bool = False) -> list[Path]:
    """Image files under `folder` in natural order of their relative path (hidden files skipped)."""
    wanted = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    files = [p for p in _candidate_files(folder, recursive, kohya_folders) if p.suffix.lower() in wanted]
    return sorted(files, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def selected_files(folder: Path, recursive: bool = False, use_kohya_repeats: bool = False, offset: int = 0,
                   limit: int = 0) -> list[Path]:
    """The files a load reads, in order: the image files from `offset` on, at most `limit` (0 = all)."""
    files = list_image_files(folder, recursive, kohya_folders=use_kohya_repeats)[max(0, offset):]
    return files[:limit] if limit > 0 else files


def check_pictures_reachable(folder: Path, recursive: bool, kohya_folders: bool = False) -> None:
    """With recursive off, a folder whose pictures all lie in subfolders would load nothing: say
    how many there are and what to turn on (InputError for 'recursive')."""
    if recursive or not Path(folder).is_dir() or list_image_files(folder, False, kohya_folders=kohya_folders):
        return
    nested = list_image_files(folder, True)
    if nested:
        raise InputError("recursive", f"{folder} has no pictures at its top level; found {len(nested)} pictures in "
                                      "subfolders; turn on recursive")


def folder_fingerprint(folder: Path, recursive: bool = False, use_kohya_repeats: bool = False) -> Optional[str]:
    """A hash of the names, sizes and times of every file the loader would look at (images and
    captions), so a cache re-runs the load when any of them changes; None for a missing folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(_candidate_files(folder, recursive, use_kohya_repeats)):
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def kohya_repeats(path: Path, folder: Path) -> int:
    """N for a file inside a kohya-style `N_name` folder (the nearest one), else 1."""
    for part in reversed(path.relative_to(folder).parts[:-1]):
        match = _KOHYA_FOLDER.match(part)
        if match:
            return max(1, int(match.group(1)))
    return 1


def caption_path(image_path: Path, caption_extension: str = ".txt") -> Optional[Path]:
    """Where the image's same-stem caption file would be; None when captions are off ('')."""
    if not caption_extension:
        return None
    suffix = caption_extension if caption_extension.startswith(".") else "." + caption_extension
    return image_path.with_suffix(suffix)


def read_caption(image_path: Path, caption_extension: str = ".txt") -> str:
    """The same-stem caption file's text (UTF-8, BOM tolerated, stripped), or ""."""
    path = caption_path(image_path, caption_extension)
    if path is None or not path.is_file():
        return ""
    return path.read_text(encoding="utf-8-sig", errors="replace").strip()


def uncaptioned_warning(images: list[LoadedImage], caption_extension: str) -> Optional[str]:
    """One warning for all the images without a caption file (they train with an empty [filewords])."""
    expected = [(image.path, caption_path(image.path, caption_extension)) for image in images]
    missing = [(image, caption) for image, caption in expected if caption is not None and not caption.is_file()]
    if not missing:
        return None
    image, caption = missing[0]
    return (f"{len(missing)} of {len(images)} images have no caption file (e.g. {caption.name} for "
            f"{image.name}): they train with an empty caption ([filewords])")


def check_max_side(value: object) -> int:
    """`max_side` as an int: 0 (full size) or MAX_SIDE_MIN..MAX_SIDE_MAX pixels, else InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError("max_side", f"expected a whole number of pixels, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InputError("max_side", f"expected a whole number of pixels, got {value!r}") from None
    if not number.is_integer():
        raise InputError("max_side", f"expected a whole number of pixels, got {value!r}")
    side = int(number)
    if side < 0:
        raise InputError("max_side", f"is {side}: must be 0 (keep full size) or a positive number of pixels")
    if 0 < side < MAX_SIDE_MIN:
        raise InputError("max_side", f"is {side}: use 0 (keep full size) or at least {MAX_SIDE_MIN} pixels")
    if side > MAX_SIDE_MAX:
        raise InputError("max_side", f"is {side}: at most {MAX_SIDE_MAX} pixels (0 keeps full size)")
    return side


def fitted_size(width: int, height: int, max_side: int) -> Optional[tuple[int, int]]:
    """The size that fits max_side x max_side keeping the aspect ratio, or None when the picture
    already fits (never scaled up) or max_side is 0."""
    if max_side <= 0 or max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_image(path: Path, background: tuple[int, int, int] = (255, 255, 255),
                 max_megapixels: float = 100.0, notes: Optional[list[str]] = None, max_side: int = 0
                 ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Decode one file to (rgb float32 [H,W,3] 0..1, alpha float32 [H,W] or None), scaled down
    to fit max_side x max_side first when it is larger (0 = full size).

    Raises ValueError with a short reason for empty, oversized or undecodable files. Pillow's
    own warnings (damaged metadata...) never name the file, so they are held back: dropped when
    the file is refused (the ValueError says why) and added, deduplicated, to `notes` otherwise."""
    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    pillow_notes: list[str] = []
    with _pillow_warnings_into(pillow_notes):
        decoded = _decode(path, background, max_megapixels, max_side)
    if notes is not None:
        notes.extend(dict.fromkeys(note.strip() for note in pillow_notes))
    return decoded


class _PillowWarningRouter:
    """Sends each warning raised while a thread decodes into that thread's list.

    warnings.catch_warnings swaps process-wide state, so two threads each entering it would
    restore each other's copy and leave the recorder installed for good (and one file's
    warning could land in another's notes). Here the first decoding thread in installs the
    filters ("always": a repeated warning is noted for every file; our own pixel limit replaces
    Pillow's DecompressionBombWarning) and this router as showwarning, the last one out puts
    back what was there, and a warning from a thread that is not decoding goes where it went."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.decoding = 0
        self.saved: Optional[warnings.catch_warnings] = None
        self.shown_before: Callable[..., Any] = warnings.showwarning
        self.local = threading.local()

    def show(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: Optional[str] = None) -> None:
        """warnings.showwarning while a decode runs: this thread's list, else where it went before."""
        notes: Optional[list[str]] = getattr(self.local, "notes", None)
        if notes is None:
            self.shown_before(message, category, filename, lineno, file, line)
        else:
            notes.append(str(message))

    def enter(self, notes: list[str]) -> None:
        """This thread starts decoding: its warnings go to `notes`."""
        with self.lock:
            if self.decoding == 0:
                self.saved = warnings.catch_warnings()
                self.saved.__enter__()
                warnings.simplefilter("always")
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self.shown_before = warnings.showwarning
                warnings.showwarning = self.show
            self.decoding += 1
        self.local.notes = notes

    def leave(self) -> None:
        """This thread has decoded; the last one out restores the warnings state."""
        self.local.notes = None
        with self.lock:
            self.decoding -= 1
            if self.decoding == 0 and self.saved is not None:
                self.saved.__exit__(None, None, None)
                self.saved = None


_PILLOW_WARNINGS = _PillowWarningRouter()


@contextmanager
def _pillow_warnings_into(notes: list[str]) -> Iterator[None]:
    """Warnings this thread raises inside the block are appended to `notes` (thread-safe)."""
    _PILLOW_WARNINGS.enter(notes)
    try:
        yield
    finally:
        _PILLOW_WARNINGS.leave()


@contextmanager
def opened_picture(path: Path, max_megapixels: float) -> Iterator[Image.Image]:
    """`path` opened (not decoded) at its first frame, refused over `max_megapixels`; every
    Pillow failure inside the block, the decode's included, becomes a ValueError saying why."""
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > max_megapixels * 1_000_000:
                raise ValueError(f"{width}x{height} exceeds the {max_megapixels:g} megapixel limit "
                                 "(possible decompression bomb)")
            opened.seek(0)  # GIF/WebP/TIFF: first frame only
            yield opened
    except Image.DecompressionBombError as exc:
        raise ValueError(f"decompression bomb refused by Pillow ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ValueError("not a readable image (unknown or corrupt format)") from exc
    except (OSError, SyntaxError, EOFError) as exc:
        raise ValueError(f"corrupt or truncated image ({exc})") from exc


def _decode(path: Path, background: tuple[int, int, int], max_megapixels: float, max_side: int = 0
            ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """decode_image without the warning handling."""
    with opened_picture(path, max_megapixels) as opened:
        target = fitted_size(*opened.size, max_side)
        if target is not None:
            return _to_float_rgb_alpha(_downscaled(opened, target), background)
        opened.load()
        return _to_float_rgb_alpha(ImageOps.exif_transpose(opened), background)


def _downscaled(opened: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The still unloaded `opened` decoded, scaled down to `size` (stored orientation) with
    Lanczos, then turned upright by its EXIF orientation as ImageOps.exif_transpose does (a size
    that fits a square still fits it turned). A JPEG decodes at the smallest DCT scale that
    still has `size` pixels; alpha is resized with the colour (premultiplied): the mask follows."""
    drafted = opened.draft(None, size)  # JPEG only: (mode, box of the full picture), else None
    opened.load()
    orientation = opened.getexif().get(ExifTags.Base.Orientation, 1)
    image = _resizable(opened)
    box = drafted[1] if drafted else None
    resized = image.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return resized if method is None else resized.transpose(method)


def _resizable(image: Image.Image) -> Image.Image:
    """`image` in a mode Lanczos resizes without changing what _to_float_rgb_alpha makes of it:
    integer gray as float 0..1, palette / CMYK / other modes as RGB or RGBA."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return Image.fromarray(_integer_gray(image))  # float32 -> mode F
    if image.mode in _RESIZABLE_MODES and "transparency" not in image.info:
        return image
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _integer_gray(image: Image.Image) -> np.ndarray:
    """An integer gray image as float 0..1 (16-bit files store 0..65535)."""
    gray = np.asarray(image).astype(np.float32)
    # 16-bit files store 0..65535; ComfyUI's blanket 1/255 would blow them out.
    gray = gray / 65535.0 if (image.mode.startswith("I;16") or gray.max(initial=0) > 255) else gray / 255.0
    return np.clip(gray, 0, 1)


def _has_alpha(image: Image.Image) -> bool:
    mode = image.mode
    return mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info) \
        or (mode in ("L", "RGB") and "transparency" in image.info)


def _to_float_rgb_alpha(image: Image.Image, background: tuple[int, int, int]
                        ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Any Pillow mode -> float RGB composited over `background`, plus alpha if there was any."""
    mode = image.mode
    alpha: Optional[np.ndarray] = None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        rgb = np.repeat(_integer_gray(image)[..., None], 3, axis=2)
        return rgb, None
    if mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
        return np.repeat(gray[..., None], 3, axis=2), None
    if _has_alpha(image):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3]
        colour = np.asarray(background, dtype=np.float32) / 255.0
        rgb = rgba[..., :3] * alpha[..., None] + colour * (1.0 - alpha[..., None])
        return rgb.astype(np.float32), alpha
    # CMYK, palette, 1-bit, YCbCr, LAB... all have a correct RGB conversion in Pillow.
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, None


@dataclass
class _DecodedFile:
    """One file's decode in a worker: the pixels, caption and Pillow's notes, or why it was refused."""

    path: Path
    rgb: Optional[np.ndarray] = None
    alpha: Optional[np.ndarray] = None
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    refused: Optional[str] = None


def _decode_file(path: Path, background: tuple[int, int, int], max_megapixels: float, max_side: int,
                 caption_extension: str) -> _DecodedFile:
    """Decode one file and read its caption (runs in a prep worker; thread-safe)."""
    decoded = _DecodedFile(path)
    try:
        decoded.rgb, decoded.alpha = decode_image(path, background, max_megapixels, decoded.notes, max_side)
    except ValueError as exc:
        decoded.refused = str(exc)
        return decoded
    decoded.caption = read_caption(path, caption_extension)
    return decoded


def load_image_folder(folder: Path, *, recursive: bool = False, caption_extension: str = ".txt",
                      use_kohya_repeats: bool = False, offset: int = 0, limit: int = 0,
                      background: tuple[int, int, int] = (255, 255, 255),
                      max_megapixels: float = 100.0, max_side: int = 0, chunk_size: int = 0,
                      chunk: int = 0, workers: Optional[int] = None) -> LoadResult:
    """Load every image under `folder` (natural order), skipping bad files with a warning each.

    `offset`/`limit` select a window of the sorted file list (limit 0 = all); `max_side` > 0
    scales larger pictures down to fit max_side x max_side as they decode; `chunk_size` > 0 cuts
    that window into chunks of so many files and loads chunk number `chunk` only. The files decode
    in `workers` threads (None: HYPERNET_STUDIO_WORKERS, see workers.py); pictures and warnings
    come out in file order, the same as with one worker. Raises FileNotFoundError for a missing
    folder, InputError for a bad max_side or a chunk past the last (before any file is read) and
    ValueError when nothing could be loaded."""
    max_side = check_max_side(max_side)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    check_pictures_reachable(folder, recursive, use_kohya_repeats)
    files, selected_chunk = select_chunk(selected_files(folder, recursive, use_kohya_repeats, offset, limit),
                                         chunk_size, chunk)
    result = LoadResult(folder=folder, chunk=selected_chunk)
    skipped = 0
    decoded_files = imap_in_workers(
        lambda path: _decode_file(path, background, max_megapixels, max_side, caption_extension), files, workers)
    for decoded in decoded_files:  # only appends: nothing here leaves the loop early
        if decoded.refused is not None or decoded.rgb is None:
            skipped += 1
            _warn(result, f"skipped {decoded.path}: {decoded.refused}")
            continue
        if decoded.notes:
            _warn(result, f"loaded {decoded.path} despite damaged data: {'; '.join(decoded.notes)}")
        relative = decoded.path.relative_to(folder).with_suffix("")
        result.images.append(LoadedImage(
            path=decoded.path, stem=relative.as_posix(), rgb=decoded.rgb, alpha=decoded.alpha, caption=decoded.caption,
            repeats=kohya_repeats(decoded.path, folder) if use_kohya_repeats else 1))
    missing_captions = uncaptioned_warning(result.images, caption_extension)
    if missing_captions:
        _warn(result, missing_captions)
    if not result.images:
        reason = f"{skipped} file(s) could not be read" if skipped else \
            f"no {'/'.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)} files" + (" (recursive)" if recursive else "")
        raise ValueError(f"no images loaded from folder {folder}: {reason}")
    return result


def _warn(result: LoadResult, message: str) -> None:
    """Keep `message` for the node and log it (in file order, whichever worker read the file)."""
    result.warnings.append(message)
    logger.warning(message)
