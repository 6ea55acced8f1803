"""Dataset nodes (images -> dataset): Load Images, Auto Crop, Flip, Deepbooru / WD14 Tag, Save Dataset.

Data between them is ComfyUI's own: an IMAGE list (items [1,H,W,3], sizes may differ), a
parallel MASK list (1 = transparent, like core LoadImage; loss weight = 1 - mask) and
parallel STRING lists of captions and stems, so core image nodes can sit in between.
The work happens in hypernet/preprocess and hypernet/taggers, imported when a node runs."""
from __future__ import annotations

import json

from ..hypernet.errors import InputError
from ..hypernet.input_values import check_choice, single_value
from ..hypernet.preprocess.image_folder import MAX_SIDE_DEFAULT, MAX_SIDE_MAX, check_max_side
from ..hypernet.preprocess.options import (
    AUTO_SIZE_OBJECTIVES,
    CAPTION_ACTIONS,
    CROP_METHODS,
    DEEPBOORU_FILE_NAME,
    FACE_DETECTORS,
    FLIP_DIRECTIONS,
    FLIP_MODES,
    SAVE_NAMINGS,
)
from ..hypernet.preprocess.workers import check_workers_setting
from .host import HOST
from .paths import model_choices, model_file, readable_folder, yunet_file
from .widgets import Node, boolean, combo, decimal, integer, mappings, single_values, socket, text, validation

CATEGORY = "hypernetwork/dataset"
CHUNK_TYPE = "HN_CHUNK"  # Load Images' chunk (hypernet/preprocess/chunks.py Chunk) -> Save Dataset
IMAGES_IN = socket("IMAGE", tooltip="Image list (items may differ in size); batches are split into items.")
OPTIONAL_LISTS = {
    "captions": socket("STRING", forceInput=True, tooltip="Captions parallel to the images (one per image)."),
    "masks": socket("MASK", tooltip="Masks parallel to the images (1 = transparent); transformed alongside."),
    "stems": socket("STRING", forceInput=True, tooltip="File stems parallel to the images (used for names)."),
}
_SIZE = "Target {} in pixels (auto_sized picks its own size)."


def _aligned(images, captions=None, masks=None, stems=None):
    """Single IMAGE items with captions/masks/stems aligned to them."""
    from ..hypernet.preprocess.pipeline import align_dataset_inputs

    return align_dataset_inputs(images, captions, masks, stems)


def _filled_masks(images: list, masks: list) -> list:
    """The MASK output: missing masks filled with opaque zeros so it stays parallel to the images."""
    from ..hypernet.preprocess.pipeline import fill_missing_masks

    return fill_missing_masks(images, masks)


def _progress(total: int):
    """A progress callback (absolute count) backed by the host's progress bar."""
    bar = HOST.progress_bar(total)
    return lambda done: bar.update_absolute(done, total)


def _to_pil(items: list) -> list:
    from ..hypernet.images import image_tensor_to_pil

    return [image_tensor_to_pil(item) for item in items]


def _tag_result(captions: list[str], tags: list[str], widgets: dict) -> dict:
    """Combine tags with incoming captions per the caption action; show the tags on the node."""
    from ..hypernet.preprocess.captions import combine_caption

    combined = [combine_caption(c, t, widgets["caption_action"], widgets["separator"]) for c, t in zip(captions, tags)]
    return {"ui": {"text": tags}, "result": (combined, tags)}


LOAD_IMAGES_INPUTS = {
    "folder": text(default="dataset", tooltip="Folder of images: absolute, or relative to ComfyUI's input folder."),
    "recursive": boolean(default=False, tooltip="Also load images from subfolders."),
    "caption_extension": text(default=".txt",
                              tooltip="Extension of the same-stem caption files (empty = no captions)."),
    "kohya_repeats": boolean(default=False,
                             tooltip="Also read kohya-style 'N_name' subfolders (even without recursive) and repeat "
                                     "their images N times."),
    "offset": integer(default=0, min=0, max=1_000_000, step=1, tooltip="Skip this many files (in natural sort order)."),
    "limit": integer(default=0, min=0, max=1_000_000, step=1, tooltip="Load at most this many files (0 = all)."),
    "background": text(default="white", tooltip="Colour transparent pixels are composited on: name, #rrggbb or r,g,b."),
    "max_megapixels": decimal(default=100.0, min=1.0, max=178.0, step=1.0,
                              tooltip="Skip larger images (decompression-bomb guard; Pillow itself refuses more than "
                                      "about 179 megapixels)."),
}
# Added after the first release: optional, so workflows saved without it load with its default.
LOAD_IMAGES_OPTIONAL = {
    "max_side": integer(default=MAX_SIDE_DEFAULT, min=0, max=MAX_SIDE_MAX, step=64,
                        tooltip="Scale larger pictures down as they load to fit this many pixels a side (Lanczos, "
                                "aspect kept, never up), so memory follows the training size, not the camera's. 0 = "
                                "full size, as A1111 (a 4 MP photo then needs about twice the memory)."),
    "chunk_size": integer(default=0, min=0, max=1_000_000, step=1,
                          tooltip="Load the files in chunks of this many, one chunk per queue run, so memory holds "
                                  "one chunk, not the folder (0 = all at once). Wire the chunk output to Save "
                                  "Dataset, which then adds each chunk to the same folder."),
    "chunk": integer(default=0, min=0, max=1_000_000, step=1, control_after_generate=True,
                     tooltip="Which chunk to load (0 = the first). With 'increment' each queue run takes the next: "
                             "queue as many runs as the node says there are chunks (ignored while chunk_size is 0)."),
}


class LoadImagesNode(Node):
    """Load a folder of images (natural order, EXIF-rotated, alpha composited and kept as mask)
    with their same-stem caption files. Bad files are skipped with one warning each."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_LoadImages", "Load Images (dataset)", CATEGORY, "load"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING", "INT", CHUNK_TYPE)
    RETURN_NAMES = ("images", "masks", "captions", "stems", "count", "chunk")
    OUTPUT_IS_LIST = (True, True, True, True, False, False)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(LOAD_IMAGES_INPUTS), "optional": dict(LOAD_IMAGES_OPTIONAL)}

    @classmethod
    def IS_CHANGED(cls, folder, recursive=False, kohya_repeats=False, **_):
        """Re-run when any file the load reads changes (names, sizes, times)."""
        return _folder_fingerprint(folder, recursive, kohya_repeats)

    @classmethod
    def VALIDATE_INPUTS(cls, folder, background, max_side=None, recursive=None, kohya_repeats=None, offset=None,
                        limit=None, chunk_size=None, chunk=None):
        selection = {"recursive": recursive, "use_kohya_repeats": kohya_repeats, "offset": offset, "limit": limit}
        return validation(lambda: _existing_folder(folder), lambda: _reachable(folder, recursive, kohya_repeats),
                          lambda: _check_colour(background), lambda: _check_max_side(max_side),
                          lambda: _check_chunk(folder, selection, chunk_size, chunk),
                          check_workers_setting)

    def load(self, folder, recursive, caption_extension, kohya_repeats, offset, limit, background, max_megapixels,
             max_side=MAX_SIDE_DEFAULT, chunk_size=0, chunk=0):
        from ..hypernet.preprocess.image_folder import parse_color
        from ..hypernet.preprocess.pipeline import load_folder_lists

        colour, side = _as_input("background", parse_color, background), check_max_side(max_side)
        out = _as_input("folder", lambda: load_folder_lists(
            readable_folder(folder), recursive=recursive, offset=offset, limit=limit,
            caption_extension=caption_extension, use_kohya_repeats=kohya_repeats, background=colour,
            max_megapixels=max_megapixels, max_side=side, chunk_size=chunk_size, chunk=chunk))
        summary = [*_chunk_lines(out.chunk), f"loaded {len(out.images)} image(s) from {out.folder}"]
        return {"ui": {"text": [*summary, *out.warnings], **_chunk_ui(out.chunk)},
                "result": (out.images, out.masks, out.captions, out.stems, len(out.images), out.chunk)}


def _existing_folder(folder) -> None:
    """The folder a workflow names is readable under the host's policy, and exists."""
    if folder is None:
        return
    path = readable_folder(folder)
    if not path.is_dir():
        raise InputError("folder", f"{path} does not exist. {HOST.examples_hint()}".strip())


def _reachable(folder, recursive, kohya_repeats) -> None:
    """With recursive off, the folder's pictures are not all in subfolders (queue time, not after
    the model has loaded)."""
    from ..hypernet.preprocess.image_folder import check_pictures_reachable

    if folder is not None and recursive is not None:
        check_pictures_reachable(readable_folder(folder), bool(recursive), bool(kohya_repeats))


def _folder_fingerprint(folder: str, recursive: bool, kohya_repeats: bool):
    """A hash of what the load reads (NaN, i.e. "always run", when the folder is unusable)."""
    from ..hypernet.preprocess.image_folder import folder_fingerprint

    try:
        fingerprint = folder_fingerprint(readable_folder(folder), recursive, kohya_repeats)
    except InputError:
        fingerprint = None
    return float("nan") if fingerprint is None else fingerprint


def _check_chunk(folder, selection: dict, chunk_size, chunk) -> None:
    """A chunk past the last is refused at queue time (the editor's increment runs on after the
    last chunk): it names how many chunks there are."""
    from ..hypernet.preprocess.chunks import check_chunk
    from ..hypernet.preprocess.image_folder import selected_files

    known = [folder, chunk_size, chunk, *selection.values()]
    if any(value is None for value in known) or not isinstance(chunk_size, int) or chunk_size <= 0:
        return
    path = readable_folder(folder)
    if path.is_dir() and isinstance(chunk, int):
        check_chunk(chunk, len(selected_files(path, **selection)), chunk_size)


def _chunk_lines(chunk) -> list[str]:
    return [] if chunk is None else [chunk.describe()]


def _chunk_ui(chunk) -> dict:
    """ui["chunk"] = [index, count] for a chunked load: the editor shows what is left, and
    `hypernet-studio run --all-chunks` runs the workflow again while chunks are left."""
    return {} if chunk is None else {"chunk": [chunk.index, chunk.count]}


def _check_colour(background) -> None:
    from ..hypernet.preprocess.image_folder import parse_color

    if background is not None:
        _as_input("background", parse_color, background)


def _check_max_side(max_side) -> None:
    """A whole number is checked here; anything else is refused by the host's own INT check."""
    if isinstance(max_side, (int, float)) and not isinstance(max_side, bool) and float(max_side).is_integer():
        check_max_side(max_side)


def _output_folder(folder):
    """A folder under the output folder ('..' and absolute paths refused)."""
    from ..hypernet.files import safe_join

    return None if folder is None else _as_input("folder", safe_join, HOST.output_directory(), folder)


def _check_model_file(kind: str, name, explain, override="") -> None:
    """The model file exists in its folder; a safetensors file's header is readable."""
    from ..hypernet.safe_load import UnreadableFile, check_safetensors_header

    if name is None and not override:
        return
    path = model_file(kind, name or "", explain, override or "")
    if path.suffix.lower() == ".safetensors":
        try:
            check_safetensors_header(path, f"a {kind} model")
        except UnreadableFile as exc:
            raise InputError("model_path" if override else "model", str(exc)) from None


def _as_input(input_name: str, function, *args):
    """Call `function`, reporting a ValueError or missing file as a problem of `input_name`."""
    try:
        return function(*args)
    except (FileNotFoundError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(input_name, str(exc)) from None


AUTO_CROP_INPUTS = {
    "images": IMAGES_IN,
    "method": combo(CROP_METHODS,
                    tooltip="focal: crop around faces/detail; center: crop-and-resize; split: tile long images; "
                            "auto_sized: best bucket; fill: fit + edge fill; stretch: ignore aspect."),
    "width": integer(default=512, min=64, max=8192, step=8, tooltip=_SIZE.format("width")),
    "height": integer(default=512, min=64, max=8192, step=8, tooltip=_SIZE.format("height")),
    "face_weight": decimal(default=0.9, min=0.0, max=1.0, step=0.05,
                           tooltip="Focal: weight of detected faces (0 = off)."),
    "entropy_weight": decimal(default=0.15, min=0.0, max=1.0, step=0.05,
                              tooltip="Focal: weight of the most detailed window (0 = off)."),
    "edges_weight": decimal(default=0.5, min=0.0, max=1.0, step=0.05,
                            tooltip="Focal: weight of corner/edge points (0 = off)."),
    "face_detector": combo(FACE_DETECTORS, tooltip="auto: YuNet model if present, else OpenCV Haar, else off."),
    "face_model": text(default="",
                       tooltip="YuNet .onnx: a file in the facedetect models folder or a full path (optional)."),
    "split_threshold": decimal(default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Split: only images at most this elongated vs the target."),
    "split_overlap": decimal(default=0.2, min=0.0, max=0.9, step=0.05, tooltip="Split: minimum overlap between tiles."),
    "auto_min_dim": integer(default=384, min=64, max=4096, step=8, tooltip="Auto-sized: smallest side."),
    "auto_max_dim": integer(default=768, min=64, max=4096, step=8, tooltip="Auto-sized: largest side."),
    "auto_min_area": integer(default=4096, min=64, max=16777216, step=1,
                             tooltip="Auto-sized: smallest area in pixels."),
    "auto_max_area": integer(default=409600, min=64, max=16777216, step=1,
                             tooltip="Auto-sized: largest area in pixels."),
    "auto_objective": combo(AUTO_SIZE_OBJECTIVES, tooltip="Auto-sized: prefer the biggest size or the best aspect."),
    "auto_error_threshold": decimal(default=0.1, min=0.0, max=1.0, step=0.01,
                                    tooltip="Auto-sized: largest aspect error allowed."),
    "a1111_compat": boolean(default=False,
                            tooltip="Reproduce A1111's exact boxes (its scale rule, 2-bin entropy, top-left "
                                    "fallback) instead of the fixed behaviour."),
    "debug": boolean(default=False, tooltip="Also output debug pictures showing points and boxes."),
}


class AutoCropNode(Node):
    """Crop or resize every image to the target size: focal point (faces, entropy, edges), center,
    split oversized into tiles, auto-sized, fill or stretch. Captions, masks and stems follow
    every crop and tile; the boxes come out as JSON."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_AutoCrop", "Auto Crop (focal / split / auto-size)", CATEGORY, "crop"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("images", "masks", "captions", "stems", "debug_images", "boxes_json")
    OUTPUT_IS_LIST = (True, True, True, True, True, False)
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(AUTO_CROP_INPUTS), "optional": dict(OPTIONAL_LISTS)}

    @classmethod
    def VALIDATE_INPUTS(cls, face_detector, face_model):
        detector, face_model = single_value(face_detector), single_value(face_model)
        # ComfyUI does not check a combo that VALIDATE_INPUTS takes: it is checked here
        return validation(lambda: detector is None or check_choice("face_detector", detector, FACE_DETECTORS),
                          lambda: detector is None or yunet_file(face_model or "", detector), check_workers_setting)

    def crop(self, images, captions=None, masks=None, stems=None, **widgets):
        from ..hypernet.preprocess import pipeline

        options = single_values(widgets)
        items, captions, masks, stems = _aligned(images, captions, masks, stems)
        yunet = yunet_file(options.pop("face_model"), options["face_detector"])
        out = pipeline.auto_crop_tensors(items, masks, captions, stems, options, yunet, _progress(len(items)))
        return {"ui": {"text": out.warnings},
                "result": (out.images, _filled_masks(out.images, out.masks), out.captions, out.stems,
                           out.debug_images, json.dumps(out.boxes))}


class FlipImagesNode(Node):
    """Mirror images horizontally, vertically or both (180 degrees). 'append' adds each flipped copy
    after its original (A1111); 'replace' flips in place. Captions and masks follow."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_Flip", "Flip Images (dataset)", CATEGORY, "flip"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING")
    RETURN_NAMES = ("images", "masks", "captions", "stems")
    OUTPUT_IS_LIST = (True, True, True, True)
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": IMAGES_IN,
            "direction": combo(FLIP_DIRECTIONS, tooltip="horizontal = mirror left/right; both = rotate 180 degrees."),
            "mode": combo(FLIP_MODES, tooltip="append: keep originals and add flipped copies; replace: flip in place."),
            "swap_left_right": boolean(default=False,
                                       tooltip="Swap the words 'left' and 'right' in captions of mirrored copies."),
        }, "optional": dict(OPTIONAL_LISTS)}

    def flip(self, images, direction, mode, swap_left_right, captions=None, masks=None, stems=None):
        from ..hypernet.preprocess.flip import flip_dataset

        items, captions, masks, stems = _aligned(images, captions, masks, stems)
        options = single_values({"direction": direction, "mode": mode, "swap_words": swap_left_right})
        out = flip_dataset(items, masks, captions, stems, **options)
        return (out.images, _filled_masks(out.images, out.masks), out.captions, out.stems)


TAG_CAPTION_INPUTS = {
    "caption_action": combo(CAPTION_ACTIONS,
                            tooltip="What to do with incoming captions: ignore them, copy them (no tagging result), "
                                    "prepend them to the tags, or append them after the tags."),
    "separator": text(default=", ", tooltip="Joins an existing caption and the tags (A1111 uses a single space)."),
    "batch_size": integer(default=8, min=1, max=256, step=1, tooltip="Images per inference batch."),
}
DEEPBOORU_SETTINGS = {
    "threshold": decimal(default=0.5, min=0.0, max=1.0, step=0.01, tooltip="Keep tags with at least this probability."),
    "sort_by": combo(("alphabetical", "score"), tooltip="Order of the tags."),
    "use_spaces": boolean(default=True, tooltip="Write 'long hair' instead of 'long_hair'."),
    "escape_brackets": boolean(default=True, tooltip="Escape ( and ) so prompts don't read them as weights."),
    "filter_tags": text(default="", tooltip="Comma-separated tags to leave out (spaces or underscores)."),
    "include_ranks": boolean(default=False, tooltip="Write each tag as (tag:0.953) with its probability."),
    "drop_ratings": boolean(default=True, tooltip="Leave out 'rating:' tags."),
    "input_size": integer(default=512, min=128, max=1024, step=32,
                          tooltip="Resolution the model sees (trained at 512; smaller is faster but less accurate)."),
}
DEEPBOORU_LAST_INPUTS = {
    "keep_on_device": boolean(default=False,
                              tooltip="Keep the model on the GPU after tagging (faster re-runs, ~650 MB of VRAM); "
                                      "off parks it on the CPU."),
}


class DeepbooruTagNode(Node):
    """Tag images with DeepDanbooru (A1111's model-resnet_custom_v3.pt in the deepbooru models
    folder) and combine the tags with existing captions. Runs batched on the host's device."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_DeepbooruTag", "Deepbooru Tag", CATEGORY, "tag"
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("captions", "tags")
    OUTPUT_IS_LIST = (True, True)
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        model = combo(model_choices("deepbooru", DEEPBOORU_FILE_NAME), tooltip="Deepbooru weights in models/deepbooru.")
        required = {"images": IMAGES_IN, "model": model, **DEEPBOORU_SETTINGS, **TAG_CAPTION_INPUTS,
                    **DEEPBOORU_LAST_INPUTS}
        return {"required": required, "optional": {
            "captions": OPTIONAL_LISTS["captions"],
            "model_path": text(default="",
                               tooltip="Full path of a Deepbooru .pt/.safetensors file (overrides 'model')."),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model, model_path=None):
        from ..hypernet.taggers.deepbooru import missing_model_message

        w = single_values({"model": model, "model_path": model_path})
        return validation(lambda: _check_model_file("deepbooru", w["model"], missing_model_message,
                                                    w["model_path"]))

    def tag(self, images, captions=None, model_path=None, **widgets):
        w = single_values(widgets)
        items, captions, _, _ = _aligned(images, captions)
        override = (single_value(model_path) or "").strip()
        return _tag_result(captions, _deepbooru_tags(items, w, override), w)


def _deepbooru_tags(items: list, w: dict, override: str) -> list[str]:
    """Tag every item with the Deepbooru model the widgets name (kept between runs)."""
    from ..hypernet.taggers import deepbooru
    from ..hypernet.taggers.deepbooru_post import TagOptions

    path = model_file("deepbooru", w["model"], deepbooru.missing_model_message, override)
    options = TagOptions(threshold=w["threshold"], sort_alpha=w["sort_by"] == "alphabetical",
                         use_spaces=w["use_spaces"], escape=w["escape_brackets"], filter_tags=w["filter_tags"],
                         include_ranks=w["include_ranks"], drop_ratings=w["drop_ratings"])
    model = _as_input("model_path" if override else "model", deepbooru.load_deepbooru, path, HOST.torch_device())
    try:
        return deepbooru.tag_images(model, _to_pil(items), options, w["batch_size"], _progress(len(items)),
                                    w["input_size"])
    finally:
        if not w["keep_on_device"]:
            model.offload()


WD14_SETTINGS = {
    "threshold": decimal(default=0.35, min=0.0, max=1.0, step=0.01, tooltip="Keep general tags scoring above this."),
    "character_threshold": decimal(default=0.85, min=0.0, max=1.0, step=0.01,
                                   tooltip="Keep character tags scoring above this."),
    "replace_underscore": boolean(default=False, tooltip="Write 'long hair' instead of 'long_hair'."),
    "escape_brackets": boolean(default=True, tooltip="Escape ( and ) so prompts don't read them as weights."),
    "exclude_tags": text(default="", tooltip="Comma-separated tags to leave out."),
}


class WD14TagNode(Node):
    """Tag images with a WD14 ONNX tagger (needs onnxruntime): <name>.onnx plus <name>.csv or
    selected_tags.csv in the wd14_tagger models folder. Characters first, then general tags."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_WD14Tag", "WD14 Tag (ONNX)", CATEGORY, "tag"
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("captions", "tags")
    OUTPUT_IS_LIST = (True, True)
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        model = combo(model_choices("wd14_tagger", "model.onnx"), tooltip="WD14 .onnx in models/wd14_tagger.")
        required = {"images": IMAGES_IN, "model": model, **WD14_SETTINGS, **TAG_CAPTION_INPUTS}
        return {"required": required, "optional": {"captions": OPTIONAL_LISTS["captions"]}}

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        from ..hypernet.taggers.wd14 import missing_model_message

        return validation(lambda: _check_model_file("wd14_tagger", single_value(model),
                                                    missing_model_message))

    def tag(self, images, captions=None, **widgets):
        from ..hypernet.taggers import wd14

        w = single_values(widgets)
        items, captions, _, _ = _aligned(images, captions)
        path = model_file("wd14_tagger", w["model"], wd14.missing_model_message)
        options = wd14.WD14Options(threshold=w["threshold"], character_threshold=w["character_threshold"],
                                   replace_underscore=w["replace_underscore"], escape=w["escape_brackets"],
                                   exclude_tags=w["exclude_tags"])
        model = wd14.load_wd14(path, use_gpu=HOST.torch_device().type == "cuda")
        tags = wd14.tag_images_wd14(model, _to_pil(items), options, w["batch_size"], _progress(len(items)))
        return _tag_result(captions, tags, w)


SAVE_CHUNK_IN = socket(CHUNK_TYPE, tooltip="Load Images' chunk output, when it loads a folder in chunks: files are "
                                           "numbered after the chunks saved before, so the chunks add up to one "
                                           "folder.")
SAVE_DATASET_INPUTS = {
    "images": IMAGES_IN,
    "folder": text(default="dataset",
                   tooltip="Folder under ComfyUI's output directory ('..' and absolute paths refused)."),
    "naming": combo(SAVE_NAMINGS, tooltip="File names: 00000-stem, stem, or 00000."),
    "save_alpha": boolean(default=True, tooltip="Store masks as PNG alpha (the trainer can use it as loss weight)."),
}


class SaveDatasetNode(Node):
    """Write the images as PNG (RGBA when a mask has transparency) with same-stem .txt captions
    into a folder under the output directory. Names are stable; writes are atomic."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_SaveDataset", "Save Dataset", CATEGORY, "save"
    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("folder", "count")
    INPUT_IS_LIST = True
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(SAVE_DATASET_INPUTS), "optional": {**OPTIONAL_LISTS, "chunk": SAVE_CHUNK_IN}}

    @classmethod
    def VALIDATE_INPUTS(cls, folder):
        return validation(lambda: _output_folder(single_value(folder)))

    def save(self, images, folder, naming, save_alpha, captions=None, masks=None, stems=None, chunk=None):
        from ..hypernet.preprocess.chunks import chunk_from
        from ..hypernet.preprocess.saving import save_dataset

        w = single_values({"folder": folder, "naming": naming, "save_alpha": save_alpha, "chunk": chunk})
        target, w["chunk"] = _output_folder(w["folder"]), chunk_from(w["chunk"])
        if not images:  # e.g. the dropped lists of a filter that dropped nothing
            if w["chunk"] is not None:  # still a saved chunk: the chunks after it number on from it
                save_dataset(target, [], naming=w["naming"], chunk=w["chunk"])
            return {"ui": {"text": [f"nothing to write to {target}: no images came in"]}, "result": (str(target), 0)}
        items, caption_items, mask_items, stem_items = _aligned(images, captions, masks, stems)
        saved = save_dataset(target, items, caption_items if captions is not None else None,
                             stem_items if stems is not None else None, mask_items if w["save_alpha"] else None,
                             w["naming"], _progress(len(items)), w["chunk"])
        for path in [*saved.images, *saved.captions]:
            HOST.wrote(path)
        return {"ui": {"text": _saved_lines(saved, w["chunk"])}, "result": (str(saved.folder), len(saved.images))}


def _saved_lines(saved, chunk) -> list[str]:
    """What Save Dataset shows: what it wrote (and for which chunk), and any files it did not write."""
    which = "" if chunk is None else f" (chunk {chunk.index + 1} of {chunk.count})"
    lines = [f"wrote {len(saved.images)} images and {len(saved.captions)} captions to {saved.folder}{which}"]
    if saved.leftovers:
        lines.append(f"warning: {len(saved.leftovers)} other .png/.txt file(s) in that folder were not written by "
                     f"this run (e.g. {saved.leftovers[0].name}); a trainer reading the folder uses them too")
    return lines


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(
    [LoadImagesNode, AutoCropNode, FlipImagesNode, DeepbooruTagNode, WD14TagNode, SaveDatasetNode])
