"""A training set read from a prepared folder (what Save Dataset writes, or a kohya-style folder
with `N_name` repeat subfolders and `.txt` captions) without holding its pixels.

read_training_set() reads each picture's name, caption and size from its file's header, never its
pixels: the size a picture decodes to (EXIF orientation applied, scaled to fit `max_side`) decides
its bucket, and the batch plan needs only that. TrainingSet.examples() gives TrainingExamples whose
pixels are decoded from the file when their latent is encoded, exactly as Load Images decodes
them (image_folder.decode_image) and sized as the in-memory path sizes them
(batches.sized_for_training), so both paths train on the same pixels; after encoding nothing of
the picture stays but its latent."""
from __future__ import annotations

import logging
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from PIL import ExifTags, Image, PngImagePlugin

from ..errors import InputError
from ..images import array_to_image_tensor
from ..preprocess.image_folder import (
    MAX_SIDE_DEFAULT,
    caption_path,
    check_max_side,
    decode_image,
    fitted_size,
    kohya_repeats,
    list_image_files,
    opened_picture,
    read_caption,
)
from ..preprocess.options import IMAGE_EXTENSIONS
from .batches import TrainingExample, bucket_size, check_resolution, sized_for_training

logger = logging.getLogger(__name__)

# EXIF orientations that turn the picture a quarter (transpose, 90 and 270 degrees, transverse):
# the picture's width and height swap when it is turned upright.
_QUARTER_TURNS = (5, 6, 7, 8)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bumped whenever the way a file becomes training pixels changes, so cached latents keyed by
# cache_identity are never reused for pixels made another way.
_PIXELS_VERSION = 1


@dataclass(frozen=True)
class DecodeSettings:
    """How a picture file is decoded, as Load Images' widgets of the same names say."""

    background: tuple[int, int, int] = (255, 255, 255)  # transparent pixels are composited on it
    max_side: int = MAX_SIDE_DEFAULT  # larger pictures are scaled down to fit it as they decode (0 = full size)
    max_megapixels: float = 100.0  # larger pictures are refused (decompression-bomb guard)


@dataclass(frozen=True)
class PictureFile:
    """One picture of the set as its header describes it; the stamp (bytes, mtime) is checked again
    when it is decoded, so a file changed since it was read is never trained on unnoticed."""

    path: Path
    caption: str
    size: tuple[int, int]  # (width, height) it decodes to: upright, fitted to max_side
    may_have_alpha: bool  # its mode or header has transparency (an opaque one needs no alpha decode)
    repeats: int  # a kohya `N_name` folder's N, else 1
    file_size: int
    mtime_ns: int


@dataclass
class TrainingSet:
    """The pictures of a prepared folder (natural order, as Load Images lists them), read from
    their headers, and how they decode. What Load Training Set hands to Train Hypernet."""

    folder: Path
    pictures: list[PictureFile]
    settings: DecodeSettings = field(default_factory=DecodeSettings)
    warnings: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Images trained on: every picture times its repeats."""
        return sum(picture.repeats for picture in self.pictures)

    def examples(self, resolution: int, aspect_buckets: bool = True, multiple: int = 64) -> list[TrainingExample]:
        """One example per picture and repeat, at its bucket size (as prepare_examples sizes the
        same pictures in memory); no pixels are decoded here."""
        check_resolution(resolution, multiple)
        examples = []
        for picture in self.pictures:
            width, height = picture.size
            size = bucket_size(width, height, resolution, multiple) if aspect_buckets else (resolution, resolution)
            source = PictureFileSource(picture, self.settings, size, aspect_buckets)
            examples += [TrainingExample(None, picture.caption, source=source, cache_identity=source.identity())
                         for _ in range(picture.repeats)]
        return examples


class PictureFileSource:
    """A picture file's training pixels at `size`, decoded each time they are asked for
    (batches.PictureSource)."""

    def __init__(self, picture: PictureFile, settings: DecodeSettings, size: tuple[int, int], cover: bool):
        self.picture, self.settings, self.size, self.cover = picture, settings, size, cover

    def identity(self) -> str:
        """What the training pixels are made from: the resolved file and its stamp, how it decodes,
        the training size and fit. Equal identities give equal pixels (a latent cache's key)."""
        picture, settings = self.picture, self.settings
        red, green, blue = settings.background
        return (f"picture-file v{_PIXELS_VERSION}|{picture.path.resolve()}|bytes={picture.file_size}|"
                f"mtime_ns={picture.mtime_ns}|max_side={settings.max_side}|background={red},{green},{blue}|"
                f"train={self.size[0]}x{self.size[1]} {'cover' if self.cover else 'stretch'}")

    def training_pixels(self) -> torch.Tensor:
        image, _ = self._decoded()
        return sized_for_training(image, None, self.size, self.cover)[0]

    def training_alpha(self) -> Optional[torch.Tensor]:
        if not self.picture.may_have_alpha:
            return None
        image, mask = self._decoded()
        return None if mask is None else sized_for_training(image, mask, self.size, self.cover)[1]

    def _decoded(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The picture as Load Images gives it: IMAGE [1,H,W,3] and its MASK [H,W] (1 = transparent)
        or None, after checking the file is still the one read."""
        picture, settings = self.picture, self.settings
        path = picture.path
        try:
            stat = path.stat()
            if (stat.st_size, stat.st_mtime_ns) != (picture.file_size, picture.mtime_ns):
                raise ValueError("it changed after the training set was read; queue the workflow again")
            notes: list[str] = []
            rgb, alpha = decode_image(path, settings.background, settings.max_megapixels, notes, settings.max_side)
        except (OSError, ValueError) as exc:
            raise InputError("training_set", f"picture {path} could not be read: {exc}") from None
        if notes:
            logger.warning("decoded %s despite damaged data: %s", path, "; ".join(notes))
        if (rgb.shape[1], rgb.shape[0]) != picture.size:
            raise InputError("training_set", f"picture {path} decoded to {rgb.shape[1]}x{rgb.shape[0]}, but its header "
                                             f"said {picture.size[0]}x{picture.size[1]}; queue the workflow again")
        return array_to_image_tensor(rgb), None if alpha is None else torch.from_numpy(1.0 - alpha)


def read_training_set(folder: Path, caption_extension: str = ".txt",
                      settings: Optional[DecodeSettings] = None) -> TrainingSet:
    """The pictures of `folder` and of its `N_name` subfolders (repeated N times), in Load Images'
    order, with their same-stem captions, read from their headers. An unreadable header skips
    its file with a warning (as Load Images skips an undecodable file). InputError for 'folder'
    when it is missing or no picture can be read, for 'max_side' when that is out of range."""
    settings = settings or DecodeSettings()
    check_max_side(settings.max_side)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("folder", f"{folder} is not a folder")
    files = list_image_files(folder, kohya_folders=True)
    if not files:
        raise InputError("folder", no_pictures_message(folder))
    result = TrainingSet(folder, [], settings)
    for path in files:
        try:
            result.pictures.append(_picture_file(path, folder, caption_extension, settings))
        except ValueError as exc:
            result.warnings.append(f"skipped {path}: {exc}")
            logger.warning(result.warnings[-1])
    if not result.pictures:
        raise InputError("folder", f"no picture of {folder} could be read ({len(files)} skipped: "
                                   f"{'; '.join(result.warnings[:3])})")
    missing = [p for p in result.pictures if (c := caption_path(p.path, caption_extension)) and not c.is_file()]
    if missing:
        result.warnings.append(f"{len(missing)} of {len(result.pictures)} pictures have no caption file (e.g. "
                               f"{missing[0].path.name}): they train with an empty caption ([filewords])")
    return result


def no_pictures_message(folder: Path) -> str:
    """Why `folder` gives no training set: no pictures where they are read, maybe some deeper."""
    kinds = "/".join(extension.lstrip(".") for extension in IMAGE_EXTENSIONS)
    message = f"{folder} has no pictures ({kinds}) at its top level or in kohya-style N_name subfolders"
    nested = list_image_files(folder, recursive=True)
    if nested:
        message += (f"; found {len(nested)} in other subfolders (e.g. {nested[0].relative_to(folder).as_posix()}): "
                    "point it at the folder that holds them, or name that subfolder N_name to repeat it N times")
    return message


def _picture_file(path: Path, folder: Path, caption_extension: str, settings: DecodeSettings) -> PictureFile:
    """One file described from its header (ValueError with a short reason when it is unusable)."""
    stat = path.stat()
    if stat.st_size == 0:
        raise ValueError("empty file (0 bytes)")
    size, may_have_alpha = _header(path, settings)
    return PictureFile(path, read_caption(path, caption_extension), size, may_have_alpha, kohya_repeats(path, folder),
                       stat.st_size, stat.st_mtime_ns)


def _header(path: Path, settings: DecodeSettings) -> tuple[tuple[int, int], bool]:
    """The (width, height) decode_image gives the file, and whether it may have alpha, from the
    header alone (the same limits and error texts as decode_image)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the decode reports damaged data; the header only needs the size
        with opened_picture(path, settings.max_megapixels) as opened:
            width, height = opened.size
            orientation = _orientation(opened, path)
            may_have_alpha = "A" in opened.mode or "a" in opened.mode or "transparency" in opened.info
    width, height = fitted_size(width, height, settings.max_side) or (width, height)
    return ((height, width) if orientation in _QUARTER_TURNS else (width, height)), may_have_alpha


def _orientation(opened: Image.Image, path: Path) -> int:
    """The EXIF orientation the decode applies (ImageOps.exif_transpose reads it the same way).
    A PNG may store its EXIF or XMP after the pixel data, where Pillow looks only once it decodes:
    those chunks are read here without decoding."""
    if opened.format == "PNG" and "exif" not in opened.info:
        opened.info.update(_png_chunk_info(path))
    orientation = Image.Image.getexif(opened).get(ExifTags.Base.Orientation, 1)
    return int(orientation) if isinstance(orientation, int) else 1


def _png_chunk_info(path: Path) -> dict:
    """What Pillow's PNG reader puts in `info` from every chunk, the ones after the pixel data too,
    reading the chunks but skipping the pixel data itself."""
    with open(path, "rb") as file:
        if file.read(8) != _PNG_SIGNATURE:
            return {}
        stream = PngImagePlugin.PngStream(file)
        while True:
            try:
                chunk, position, length = stream.read()
                if chunk == b"IEND":
                    break
                if chunk in (b"IDAT", b"fdAT"):
                    file.seek(length, 1)
                else:
                    stream.call(chunk, position, length)
            except AttributeError:  # a chunk Pillow does not read
                file.seek(length, 1)
            except (struct.error, EOFError, SyntaxError, ValueError, OSError):  # damaged: keep what was read
                break
            file.seek(4, 1)  # the CRC
        return stream.im_info
