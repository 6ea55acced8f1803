"""Dataset preparation nodes: Load Images, Auto Crop, Flip, Deepbooru / WD14 Tag, Save Dataset.

Data between them is ComfyUI's own: an IMAGE list (items [1,H,W,3], sizes may differ), a
parallel MASK list (1 = transparent, like core LoadImage; loss weight = 1 - mask) and
parallel STRING lists of captions and stems, so core image nodes can sit in between.
The work happens in hypernet/preprocess and hypernet/taggers, imported lazily."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from ..hypernet.preprocess.options import (AUTO_SIZE_OBJECTIVES, CAPTION_ACTIONS, CROP_METHODS,
                                           DEEPBOORU_FILE_NAME, FACE_DETECTORS, FLIP_DIRECTIONS, FLIP_MODES,
                                           SAVE_NAMINGS)
from . import comfy_adapter as host

CATEGORY = "hypernetwork/dataset"


# --------------------------------------------------------------------------- helpers
def _int(default: int, low: int, high: int, tooltip: str, step: int = 1) -> tuple:
    """An INT widget spec."""
    return ("INT", {"default": default, "min": low, "max": high, "step": step, "tooltip": tooltip})


def _float(default: float, low: float, high: float, tooltip: str, step: float = 0.05) -> tuple:
    """A FLOAT widget spec."""
    return ("FLOAT", {"default": default, "min": low, "max": high, "step": step, "tooltip": tooltip})


def _bool(default: bool, tooltip: str) -> tuple:
    """A BOOLEAN widget spec."""
    return ("BOOLEAN", {"default": default, "tooltip": tooltip})


def _text(default: str, tooltip: str) -> tuple:
    """A single-line STRING widget spec."""
    return ("STRING", {"default": default, "tooltip": tooltip})


def _combo(options, tooltip: str, default: Optional[str] = None) -> tuple:
    """A combo widget spec."""
    options = list(options)
    return (options, {"default": default or options[0], "tooltip": tooltip})


_IMAGES_IN = ("IMAGE", {"tooltip": "Image list (items may differ in size); batches are split into items."})
_OPTIONAL_LISTS = {
    "captions": ("STRING", {"forceInput": True, "tooltip": "Captions parallel to the images (one per image)."}),
    "masks": ("MASK", {"tooltip": "Masks parallel to the images (1 = transparent); transformed alongside."}),
    "stems": ("STRING", {"forceInput": True, "tooltip": "File stems parallel to the images (used for names)."}),
}


def _widgets(values: dict[str, Any]) -> dict[str, Any]:
    """INPUT_IS_LIST nodes get every widget as a one-item list: unwrap them."""
    return {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in values.items()}


def _aligned(node: str, images: list, captions: Optional[list], masks: Optional[list],
             stems: Optional[list]) -> tuple[list, list, list, list]:
    """Single IMAGE items with captions/masks/stems aligned to them (see pipeline.align_dataset_inputs)."""
    from ..hypernet.preprocess.pipeline import align_dataset_inputs

    return align_dataset_inputs(node, images, captions, masks, stems)


def _filled_masks(images: list, masks: list) -> list:
    """The MASK output: missing masks filled with opaque zeros so it stays parallel to the images."""
    from ..hypernet.preprocess.pipeline import fill_missing_masks

    return fill_missing_masks(images, masks)


def _progress(total: int):
    """A progress callback (absolute count) backed by the host's progress bar."""
    bar = host.progress_bar(total)
    return lambda done: bar.update_absolute(done, total)


def _resolve_folder(folder: str) -> Path:
    """A folder given absolute, or relative to the input directory."""
    path = Path(os.path.expanduser(folder.strip()))
    return path if path.is_absolute() else host.input_directory() / path


def _model_choices(kind: str, fallback: str) -> list[str]:
    """Files of a model folder for a combo; the expected name when empty, so the error can explain."""
    return host.list_models(kind) or [fallback]


def _resolve_model_file(node: str, kind: str, name: str, path_override: str, explain) -> Path:
    """An explicit path wins; else a file of the `kind` folder; else `explain(name, folders)` says
    which file goes where and where to get it."""
    if path_override and path_override.strip():
        path = Path(os.path.expanduser(path_override.strip()))
        if not path.is_file():
            raise FileNotFoundError(f"{node}: input 'model_path': {explain(str(path), [path.parent])}")
        return path
    try:
        return host.resolve_model(kind, name)
    except FileNotFoundError:
        raise FileNotFoundError(f"{node}: input 'model': {explain(name, host.model_folders(kind))}") from None


def _face_model_path(name: str, detector: str) -> Optional[Path]:
    """The YuNet file to use: a given name/path, else the first file of the facedetect folder."""
    if detector not in ("auto", "yunet"):
        return None
    name = (name or "").strip()
    if name:
        path = Path(os.path.expanduser(name))
        try:
            path = path if path.is_absolute() else host.resolve_model("facedetect", name)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"HN_AutoCrop: input 'face_model': {exc}") from None
        if not path.is_file():
            raise FileNotFoundError(f"HN_AutoCrop: input 'face_model': YuNet file not found: {path}")
        return path
    available = host.list_models("facedetect")
    if available:
        return host.resolve_model("facedetect", available[0])
    if detector == "yunet":
        folders = ", ".join(str(f) for f in host.model_folders("facedetect"))
        raise FileNotFoundError(f"HN_AutoCrop: input 'face_detector' is 'yunet' but no YuNet .onnx was given "
                                f"('face_model') or found in {folders}; get face_detection_yunet_2023mar.onnx "
                                "from github.com/opencv/opencv_zoo (this pack never downloads models)")
    return None


# --------------------------------------------------------------------------- nodes
class HN_LoadImages:
    """Load a folder of images (natural order, EXIF-rotated, alpha composited and kept as mask)
    with their same-stem caption files. Bad files are skipped with one warning each."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "folder": _text("dataset", "Folder of images: absolute, or relative to ComfyUI's input folder."),
            "recursive": _bool(False, "Also load images from subfolders."),
            "caption_extension": _text(".txt", "Extension of the same-stem caption files (empty = no captions)."),
            "kohya_repeats": _bool(False, "Also read kohya-style 'N_name' subfolders (even without recursive) "
                                   "and repeat their images N times."),
            "offset": _int(0, 0, 1_000_000, "Skip this many files (in natural sort order)."),
            "limit": _int(0, 0, 1_000_000, "Load at most this many files (0 = all)."),
            "background": _text("white", "Colour transparent pixels are composited on: name, #rrggbb or r,g,b."),
            "max_megapixels": _float(100.0, 1.0, 178.0, "Skip larger images (decompression-bomb guard; Pillow itself "
                                     "refuses more than about 179 megapixels).", 1.0),
        }}

    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING", "INT")
    RETURN_NAMES = ("images", "masks", "captions", "stems", "count")
    OUTPUT_IS_LIST = (True, True, True, True, False)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def IS_CHANGED(cls, folder, recursive=False, kohya_repeats=False, **_):
        """Re-run when any file the load reads changes (names, sizes, times)."""
        from ..hypernet.preprocess.image_folder import folder_fingerprint

        fingerprint = folder_fingerprint(_resolve_folder(folder), recursive, kohya_repeats)
        return float("nan") if fingerprint is None else fingerprint

    def load(self, folder, recursive, caption_extension, kohya_repeats, offset, limit, background, max_megapixels):
        from ..hypernet.preprocess.image_folder import parse_color
        from ..hypernet.preprocess.pipeline import load_folder_lists

        try:
            colour = parse_color(background)
        except ValueError as exc:
            raise ValueError(f"HN_LoadImages: input 'background': {exc}") from None
        try:
            out = load_folder_lists(_resolve_folder(folder), recursive=recursive, offset=offset, limit=limit,
                                    caption_extension=caption_extension, use_kohya_repeats=kohya_repeats,
                                    background=colour, max_megapixels=max_megapixels)
        except (FileNotFoundError, ValueError) as exc:
            raise type(exc)(f"HN_LoadImages: input 'folder': {exc}") from None
        summary = f"loaded {len(out.images)} image(s) from {out.folder}"
        return {"ui": {"text": [summary, *out.warnings]},
                "result": (out.images, out.masks, out.captions, out.stems, len(out.images))}


class HN_AutoCrop:
    """Crop or resize every image to the target size: focal point (faces, entropy, edges), center,
    split oversized into tiles, auto-sized, fill or stretch. Captions, masks and stems follow
    every crop and tile; the boxes come out as JSON."""

    @classmethod
    def INPUT_TYPES(cls):
        size = "Target {} in pixels (auto_sized picks its own size)."
        return {"required": {
            "images": _IMAGES_IN,
            "method": _combo(CROP_METHODS, "focal: crop around faces/detail; center: crop-and-resize; split: tile "
                             "long images; auto_sized: best bucket; fill: fit + edge fill; stretch: ignore aspect."),
            "width": _int(512, 64, 8192, size.format("width"), 8),
            "height": _int(512, 64, 8192, size.format("height"), 8),
            "face_weight": _float(0.9, 0.0, 1.0, "Focal: weight of detected faces (0 = off)."),
            "entropy_weight": _float(0.15, 0.0, 1.0, "Focal: weight of the most detailed window (0 = off)."),
            "edges_weight": _float(0.5, 0.0, 1.0, "Focal: weight of corner/edge points (0 = off)."),
            "face_detector": _combo(FACE_DETECTORS, "auto: YuNet model if present, else OpenCV Haar, else off."),
            "face_model": _text("", "YuNet .onnx: a file in the facedetect models folder or a full path (optional)."),
            "split_threshold": _float(0.5, 0.0, 1.0, "Split: only images at most this elongated vs the target."),
            "split_overlap": _float(0.2, 0.0, 0.9, "Split: minimum overlap between tiles."),
            "auto_min_dim": _int(384, 64, 4096, "Auto-sized: smallest side.", 8),
            "auto_max_dim": _int(768, 64, 4096, "Auto-sized: largest side.", 8),
            "auto_min_area": _int(4096, 64, 16777216, "Auto-sized: smallest area in pixels."),
            "auto_max_area": _int(409600, 64, 16777216, "Auto-sized: largest area in pixels."),
            "auto_objective": _combo(AUTO_SIZE_OBJECTIVES, "Auto-sized: prefer the biggest size or the best aspect."),
            "auto_error_threshold": _float(0.1, 0.0, 1.0, "Auto-sized: largest aspect error allowed.", 0.01),
            "a1111_compat": _bool(False, "Reproduce A1111's exact boxes (its scale rule, 2-bin entropy, top-left "
                                  "fallback) instead of the fixed behaviour."),
            "debug": _bool(False, "Also output debug pictures showing points and boxes."),
        }, "optional": dict(_OPTIONAL_LISTS)}

    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("images", "masks", "captions", "stems", "debug_images", "boxes_json")
    OUTPUT_IS_LIST = (True, True, True, True, True, False)
    INPUT_IS_LIST = True
    FUNCTION = "crop"
    CATEGORY = CATEGORY

    def crop(self, images, captions=None, masks=None, stems=None, **widgets):
        from ..hypernet.preprocess import pipeline

        options = _widgets(widgets)
        items, captions, masks, stems = _aligned("HN_AutoCrop", images, captions, masks, stems)
        yunet = _face_model_path(options.pop("face_model"), options["face_detector"])
        out = pipeline.auto_crop_tensors(items, masks, captions, stems, options, yunet, _progress(len(items)),
                                         node="HN_AutoCrop")
        return {"ui": {"text": out.warnings},
                "result": (out.images, _filled_masks(out.images, out.masks), out.captions, out.stems, out.debug_images,
                           json.dumps(out.boxes))}


class HN_Flip:
    """Mirror images horizontally, vertically or both (180 degrees). 'append' adds each flipped copy
    after its original (A1111); 'replace' flips in place. Captions and masks follow."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": _IMAGES_IN,
            "direction": _combo(FLIP_DIRECTIONS, "horizontal = mirror left/right; both = rotate 180 degrees."),
            "mode": _combo(FLIP_MODES, "append: keep originals and add flipped copies; replace: flip in place."),
            "swap_left_right": _bool(False, "Swap the words 'left' and 'right' in captions of mirrored copies."),
        }, "optional": dict(_OPTIONAL_LISTS)}

    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING")
    RETURN_NAMES = ("images", "masks", "captions", "stems")
    OUTPUT_IS_LIST = (True, True, True, True)
    INPUT_IS_LIST = True
    FUNCTION = "flip"
    CATEGORY = CATEGORY

    def flip(self, images, direction, mode, swap_left_right, captions=None, masks=None, stems=None):
        from ..hypernet.preprocess.flip import flip_dataset

        items, captions, masks, stems = _aligned("HN_Flip", images, captions, masks, stems)
        options = _widgets({"direction": direction, "mode": mode, "swap_words": swap_left_right})
        out = flip_dataset(items, masks, captions, stems, **options)
        return (out.images, _filled_masks(out.images, out.masks), out.captions, out.stems)


_TAG_CAPTION_INPUTS = {
    "caption_action": _combo(CAPTION_ACTIONS, "What to do with incoming captions: ignore them, copy them "
                             "(no tagging result), prepend them to the tags, or append them after the tags."),
    "separator": _text(", ", "Joins an existing caption and the tags (A1111 uses a single space)."),
    "batch_size": _int(8, 1, 256, "Images per inference batch."),
}


class HN_DeepbooruTag:
    """Tag images with DeepDanbooru (A1111's model-resnet_custom_v3.pt in the deepbooru models
    folder) and combine the tags with existing captions. Runs batched on the host's device."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": _IMAGES_IN,
            "model": _combo(_model_choices("deepbooru", DEEPBOORU_FILE_NAME), "Deepbooru weights in models/deepbooru."),
            "threshold": _float(0.5, 0.0, 1.0, "Keep tags with at least this probability.", 0.01),
            "sort_by": _combo(("alphabetical", "score"), "Order of the tags."),
            "use_spaces": _bool(True, "Write 'long hair' instead of 'long_hair'."),
            "escape_brackets": _bool(True, "Escape ( and ) so prompts don't read them as weights."),
            "filter_tags": _text("", "Comma-separated tags to leave out (spaces or underscores)."),
            "include_ranks": _bool(False, "Write each tag as (tag:0.953) with its probability."),
            "drop_ratings": _bool(True, "Leave out 'rating:' tags."),
            "input_size": _int(512, 128, 1024, "Resolution the model sees (trained at 512; smaller is faster "
                               "but less accurate).", 32),
            **_TAG_CAPTION_INPUTS,
            "keep_on_device": _bool(False, "Keep the model on the GPU after tagging (faster re-runs, ~650 MB "
                                    "of VRAM); off parks it on the CPU."),
        }, "optional": {
            "captions": _OPTIONAL_LISTS["captions"],
            "model_path": _text("", "Full path of a Deepbooru .pt/.safetensors file (overrides 'model')."),
        }}

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("captions", "tags")
    OUTPUT_IS_LIST = (True, True)
    INPUT_IS_LIST = True
    FUNCTION = "tag"
    CATEGORY = CATEGORY

    def tag(self, images, captions=None, model_path=None, **widgets):
        from ..hypernet.taggers import deepbooru
        from ..hypernet.taggers.deepbooru_post import TagOptions

        w = _widgets(widgets)
        items, captions, _, _ = _aligned("HN_DeepbooruTag", images, captions, None, None)
        override = (_widgets({"p": model_path})["p"] or "").strip()
        path = _resolve_model_file("HN_DeepbooruTag", "deepbooru", w["model"], override,
                                   deepbooru.missing_model_message)
        options = TagOptions(threshold=w["threshold"], sort_alpha=w["sort_by"] == "alphabetical",
                             use_spaces=w["use_spaces"], escape=w["escape_brackets"], filter_tags=w["filter_tags"],
                             include_ranks=w["include_ranks"], drop_ratings=w["drop_ratings"])
        try:
            model = deepbooru.load_deepbooru(path, host.torch_device())
        except ValueError as exc:
            raise ValueError(f"HN_DeepbooruTag: input '{'model_path' if override else 'model'}': {exc}") from None
        try:
            tags = deepbooru.tag_images(model, _to_pil(items), options, w["batch_size"], _progress(len(items)),
                                        w["input_size"])
        finally:
            if not w["keep_on_device"]:
                model.offload()
        return _tag_result(captions, tags, w)


def _to_pil(items: list) -> list:
    """IMAGE items as RGB Pillow images."""
    from ..hypernet.images import image_tensor_to_pil

    return [image_tensor_to_pil(item) for item in items]


def _tag_result(captions: list[str], tags: list[str], widgets: dict) -> dict:
    """Combine tags with incoming captions per the caption action; show the tags on the node."""
    from ..hypernet.preprocess.captions import combine_caption

    combined = [combine_caption(c, t, widgets["caption_action"], widgets["separator"]) for c, t in zip(captions, tags)]
    return {"ui": {"text": tags}, "result": (combined, tags)}


class HN_WD14Tag:
    """Tag images with a WD14 ONNX tagger (needs onnxruntime): <name>.onnx plus <name>.csv or
    selected_tags.csv in the wd14_tagger models folder. Characters first, then general tags."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": _IMAGES_IN,
            "model": _combo(_model_choices("wd14_tagger", "model.onnx"), "WD14 .onnx in models/wd14_tagger."),
            "threshold": _float(0.35, 0.0, 1.0, "Keep general tags scoring above this.", 0.01),
            "character_threshold": _float(0.85, 0.0, 1.0, "Keep character tags scoring above this.", 0.01),
            "replace_underscore": _bool(False, "Write 'long hair' instead of 'long_hair'."),
            "escape_brackets": _bool(True, "Escape ( and ) so prompts don't read them as weights."),
            "exclude_tags": _text("", "Comma-separated tags to leave out."),
            **_TAG_CAPTION_INPUTS,
        }, "optional": {"captions": _OPTIONAL_LISTS["captions"]}}

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("captions", "tags")
    OUTPUT_IS_LIST = (True, True)
    INPUT_IS_LIST = True
    FUNCTION = "tag"
    CATEGORY = CATEGORY

    def tag(self, images, captions=None, **widgets):
        from ..hypernet.taggers import wd14

        w = _widgets(widgets)
        items, captions, _, _ = _aligned("HN_WD14Tag", images, captions, None, None)
        path = _resolve_model_file("HN_WD14Tag", "wd14_tagger", w["model"], "", wd14.missing_model_message)
        options = wd14.WD14Options(threshold=w["threshold"], character_threshold=w["character_threshold"],
                                   replace_underscore=w["replace_underscore"], escape=w["escape_brackets"],
                                   exclude_tags=w["exclude_tags"])
        model = wd14.load_wd14(path, use_gpu=host.torch_device().type == "cuda")
        tags = wd14.tag_images_wd14(model, _to_pil(items), options, w["batch_size"], _progress(len(items)))
        return _tag_result(captions, tags, w)


class HN_SaveDataset:
    """Write the images as PNG (RGBA when a mask has transparency) with same-stem .txt captions
    into a folder under the output directory. Names are stable; writes are atomic."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": _IMAGES_IN,
            "folder": _text("dataset", "Folder under ComfyUI's output directory ('..' and absolute paths refused)."),
            "naming": _combo(SAVE_NAMINGS, "File names: 00000-stem, stem, or 00000."),
            "save_alpha": _bool(True, "Store masks as PNG alpha (the trainer can use it as loss weight)."),
        }, "optional": dict(_OPTIONAL_LISTS)}

    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("folder", "count")
    INPUT_IS_LIST = True
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY

    def save(self, images, folder, naming, save_alpha, captions=None, masks=None, stems=None):
        from ..hypernet.files import safe_join
        from ..hypernet.preprocess.saving import save_dataset

        w = _widgets({"folder": folder, "naming": naming, "save_alpha": save_alpha})
        items, caption_items, mask_items, stem_items = _aligned("HN_SaveDataset", images, captions, masks, stems)
        try:
            target = safe_join(host.output_directory(), w["folder"])
        except ValueError as exc:
            raise ValueError(f"HN_SaveDataset: input 'folder': {exc}") from None
        saved = save_dataset(target, items, caption_items if captions is not None else None,
                             stem_items if stems is not None else None, mask_items if w["save_alpha"] else None,
                             w["naming"], _progress(len(items)))
        lines = [f"wrote {len(saved.images)} images and {len(saved.captions)} captions to {saved.folder}"]
        if saved.leftovers:
            lines.append(f"warning: {len(saved.leftovers)} other .png/.txt file(s) in that folder were not written by "
                         f"this run (e.g. {saved.leftovers[0].name}); a trainer reading the folder uses them too")
        return {"ui": {"text": lines}, "result": (str(saved.folder), len(saved.images))}


_NODES = {
    "HN_LoadImages": (HN_LoadImages, "Load Images (dataset)"),
    "HN_AutoCrop": (HN_AutoCrop, "Auto Crop (focal / split / auto-size)"),
    "HN_Flip": (HN_Flip, "Flip Images (dataset)"),
    "HN_DeepbooruTag": (HN_DeepbooruTag, "Deepbooru Tag"),
    "HN_WD14Tag": (HN_WD14Tag, "WD14 Tag (ONNX)"),
    "HN_SaveDataset": (HN_SaveDataset, "Save Dataset"),
}
for _cls in (cls for cls, _ in _NODES.values()):
    _cls.DESCRIPTION = " ".join(_cls.__doc__.split())
NODE_CLASS_MAPPINGS = {node_id: cls for node_id, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in _NODES.items()}
