"""Load Training Set: a prepared folder as HN_TRAINING_SET for Train Hypernet's `training_set`.

It reads names, captions and sizes from the pictures' headers, not their pixels; training decodes
each picture when it encodes that picture's latent (hypernet/train/picture_files.py), so a set may
be far larger than memory. Folder names follow Load Images' read policy (nodes/paths.py)."""
from __future__ import annotations

import os
from pathlib import Path

from ..hypernet.errors import InputError
from ..hypernet.preprocess.image_folder import MAX_SIDE_DEFAULT, MAX_SIDE_MAX, check_max_side, parse_color
from .host import HOST
from .paths import readable_folder
from .widgets import Node, decimal, integer, mappings, text, validation

TRAINING_SET = "HN_TRAINING_SET"
LOAD_TRAINING_SET_INPUTS = {
    "folder": text(default="dataset",
                   tooltip="A prepared folder (Save Dataset's, or kohya-style N_name subfolders repeated N times) "
                           "with same-stem caption files: absolute, or a name looked up in the input folder, then "
                           "the output folder."),
    "caption_extension": text(default=".txt",
                              tooltip="Extension of the same-stem caption files (empty = no captions)."),
    "background": text(default="white", tooltip="Colour transparent pixels are composited on: name, #rrggbb or r,g,b."),
    "max_side": integer(default=MAX_SIDE_DEFAULT, min=0, max=MAX_SIDE_MAX, step=64,
                        tooltip="Pictures larger than this a side are scaled down as they decode (Lanczos), as Load "
                                "Images does; lower is faster for big photos. 0 = full size."),
    "max_megapixels": decimal(default=100.0, min=1.0, max=178.0, step=1.0,
                              tooltip="Skip larger pictures (decompression-bomb guard)."),
}


class LoadTrainingSetNode(Node):
    """Read a prepared folder for Train Hypernet's training_set: names, captions and sizes from the
    picture headers, not the pixels. Training decodes each picture once, when it encodes its
    latent, and drops the pixels, so memory does not grow with the folder."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = ("HN_LoadTrainingSet", "Load Training Set (folder)",
                                                 "hypernetwork/dataset", "load")
    RETURN_TYPES, RETURN_NAMES = (TRAINING_SET, "INT"), ("training_set", "count")
    OUTPUT_TOOLTIPS = ("The pictures to train on, for Train Hypernet's training_set.",
                       "Images trained on per epoch: pictures times their repeats.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(LOAD_TRAINING_SET_INPUTS)}

    @classmethod
    def IS_CHANGED(cls, folder, **_):
        """Re-run when any file the set reads changes (names, sizes, times)."""
        return _fingerprint(folder)

    @classmethod
    def VALIDATE_INPUTS(cls, folder, background, max_side=None):
        return validation(lambda: folder is None or _has_pictures(training_set_folder(folder)),
                          lambda: background is None or _as_input("background", parse_color, background),
                          lambda: isinstance(max_side, int) and check_max_side(max_side))

    def load(self, folder, caption_extension, background, max_side, max_megapixels):
        from ..hypernet.train.picture_files import DecodeSettings, read_training_set

        settings = DecodeSettings(_as_input("background", parse_color, background), check_max_side(max_side),
                                  float(max_megapixels))
        found = read_training_set(training_set_folder(folder), caption_extension, settings)
        summary = (f"{len(found.pictures)} pictures ({found.count} images with repeats) in {found.folder}; sizes read "
                   "from their headers, pixels decoded while training")
        return {"ui": {"text": [summary, *found.warnings]}, "result": (found, found.count)}


def training_set_folder(name: str) -> Path:
    """The folder a workflow names: absolute, or a name in the input folder, else in the output
    folder (where Save Dataset writes), under the host's read policy. The InputError for a
    missing one names every folder searched."""
    first = readable_folder(name)
    if Path(os.path.expanduser(name.strip())).is_absolute() or first.is_dir():
        if not first.is_dir():
            raise InputError("folder", f"{first} does not exist. {HOST.examples_hint()}".strip())
        return first
    second = readable_folder(str(HOST.output_directory() / name.strip()))
    if second.is_dir():
        return second
    raise InputError("folder", f"{name.strip()!r} is not a folder; searched {first} and {second}. "
                               f"{HOST.examples_hint()}".strip())


def _has_pictures(folder: Path) -> None:
    """At queue time: the folder has pictures where the set reads them (not only deeper down)."""
    from ..hypernet.preprocess.image_folder import list_image_files
    from ..hypernet.train.picture_files import no_pictures_message

    if not list_image_files(folder, kohya_folders=True):
        raise InputError("folder", no_pictures_message(folder))


def _fingerprint(folder):
    """A hash of what the set reads (NaN, i.e. "always run", when the folder is unusable)."""
    from ..hypernet.preprocess.image_folder import folder_fingerprint

    try:
        fingerprint = folder_fingerprint(training_set_folder(folder), use_kohya_repeats=True)
    except InputError:
        fingerprint = None
    return float("nan") if fingerprint is None else fingerprint


def _as_input(input_name: str, function, *args):
    """Call `function`, reporting its ValueError as a problem of `input_name`."""
    try:
        return function(*args)
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(input_name, str(exc)) from None


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings([LoadTrainingSetNode])
