"""Stand-ins for the ComfyUI core nodes our workflows use, registered only without ComfyUI.

Each class uses ComfyUI's node ID, input names, types, defaults and output order, so a
workflow saved in ComfyUI runs here unchanged. The work is done by `hypernet.sd`
(diffusers/transformers, imported lazily); folders, device and progress go through the
HOST. Behaviour is reimplemented from ComfyUI's documented behaviour.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from pathlib import Path

import torch

from ..hypernet.errors import InputError
from ..hypernet.files import UnsafePathError, atomic_path, safe_join
from ..hypernet.preprocess.options import IMAGE_EXTENSIONS
from ..hypernet.sd.sampling import SAMPLER_NAMES, SCHEDULER_NAMES
from ..hypernet.sd.tiny import TINY_MODEL_NAME, TINY_SDXL_MODEL_NAME
from ..nodes.host import HOST

MAX_RESOLUTION = 16384


# --------------------------------------------------------------------------- helpers
def _diffusers_folders() -> list[str]:
    """Names of diffusers model folders (with model_index.json) under the checkpoint folders."""
    names = set()
    for kind in ("checkpoints", "diffusers"):
        for root in HOST.model_folders(kind):
            if root.is_dir():
                for index in root.glob("*/model_index.json"):
                    names.add(index.parent.relative_to(root).as_posix())
    return sorted(names)


def _checkpoint_names() -> list[str]:
    return [TINY_MODEL_NAME, TINY_SDXL_MODEL_NAME] + HOST.list_models("checkpoints") + _diffusers_folders()


def _resolve_checkpoint(name: str) -> str:
    """The checkpoint's path (or a built-in tiny model's name); InputError naming the folders."""
    if name in (TINY_MODEL_NAME, TINY_SDXL_MODEL_NAME):
        return name
    for kind in ("checkpoints", "diffusers"):
        try:
            return str(HOST.resolve_model(kind, name))
        except FileNotFoundError:
            continue
    folders = ", ".join(str(p) for kind in ("checkpoints", "diffusers") for p in HOST.model_folders(kind))
    raise InputError("ckpt_name", f"{name!r} not found; looked in {folders}. Put the checkpoint (.safetensors, "
                                  f".ckpt, or a diffusers folder) there, or pick {TINY_MODEL_NAME!r}")


def _check_checkpoint(name: str) -> None:
    """The checkpoint exists, and a safetensors file's header is readable (cheap, before any work)."""
    from ..hypernet.safe_load import UnreadableFile, check_safetensors_header

    path = Path(_resolve_checkpoint(name))
    if path.suffix.lower() in (".safetensors", ".sft"):
        try:
            check_safetensors_header(path, "a checkpoint")
        except UnreadableFile as exc:
            raise InputError("ckpt_name", str(exc)) from None


def _conditioning_tensor(conditioning, node: str, input_name: str) -> torch.Tensor:
    """The cond tensor of the first entry of a CONDITIONING list."""
    try:
        return conditioning[0][0]
    except (TypeError, IndexError, KeyError):
        raise ValueError(f"{node}: input {input_name!r} is not a CONDITIONING list") from None


def _sampler_conditioning(model, conditioning, latent: torch.Tensor, input_name: str):
    """What sample() takes for the first CONDITIONING entry: its cond tensor, or for an SDXL model
    a TextConditioning with the entry's pooled_output and six size values. Missing sizes get
    ComfyUI's values: width/height from the latent (x8), crops 0, the target size = the size."""
    cond = _conditioning_tensor(conditioning, "KSampler", input_name)
    if not getattr(model, "uses_added_conditioning", False):
        return cond
    from ..hypernet.sd.components import TextConditioning
    from ..hypernet.sd.sdxl import VAE_DOWNSCALE, size_time_ids

    extras = conditioning[0][1] if len(conditioning[0]) > 1 and isinstance(conditioning[0][1], dict) else {}
    if extras.get("pooled_output") is None:
        raise ValueError(f"KSampler: input {input_name!r} has no pooled_output, which an SDXL model needs: encode "
                         f"the prompt with this checkpoint's CLIP (CLIPTextEncode or CLIPTextEncodeSDXL)")
    width = extras.get("width", latent.shape[-1] * VAE_DOWNSCALE)
    height = extras.get("height", latent.shape[-2] * VAE_DOWNSCALE)
    time_ids = size_time_ids(width, height, extras.get("crop_w", 0), extras.get("crop_h", 0),
                             extras.get("target_width", width), extras.get("target_height", height))
    return TextConditioning(cond, extras["pooled_output"], time_ids)


def _annotated_input_path(name: str) -> Path:
    """Resolve ComfyUI's "file.png [input|output|temp]" image names safely."""
    match = re.fullmatch(r"(.*) \[(input|output|temp)\]", name)
    folder = HOST.input_directory()
    if match:
        name = match.group(1)
        folder = {"input": HOST.input_directory, "output": HOST.output_directory,
                  "temp": HOST.temp_directory}[match.group(2)]()
    return safe_join(folder, name)


def _substitute_prefix_variables(prefix: str, width: int, height: int) -> str:
    """ComfyUI's %width%, %height% and %year%... date variables in a filename prefix."""
    now = time.localtime()
    values = {"width": width, "height": height, "year": now.tm_year, "month": f"{now.tm_mon:02}",
              "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}",
              "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix


def _save_target(base: Path, filename_prefix: str, width: int, height: int) -> tuple[Path, str, str, int]:
    """(folder, file stem, subfolder, first counter) with ComfyUI's counter rule: one more
    than the highest `{stem}_NNNNN_` already in the folder (1 when none)."""
    prefix = _substitute_prefix_variables(filename_prefix, width, height)
    subfolder, stem = os.path.split(prefix.replace("\\", "/"))
    if not stem:
        raise UnsafePathError(f"filename_prefix {filename_prefix!r} has no file name part")
    folder = safe_join(base, subfolder) if subfolder else Path(base).resolve()
    pattern = re.compile(re.escape(stem) + r"_(\d+)_?")
    counters = [int(m.group(1)) for p in (folder.iterdir() if folder.is_dir() else [])
                if (m := pattern.match(p.name))]
    return folder, stem, subfolder, max(counters, default=0) + 1


def _write_pngs(images: torch.Tensor, base: Path, filename_prefix: str, compress_level: int,
                prompt=None, extra_pnginfo=None, folder_type: str = "output") -> list[dict]:
    """Write each image of a [B,H,W,C] batch as PNG (atomically) with the prompt/workflow chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    folder, stem, subfolder, counter = _save_target(base, filename_prefix, images.shape[2], images.shape[1])
    folder.mkdir(parents=True, exist_ok=True)
    metadata = PngInfo()
    if prompt is not None:
        metadata.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        metadata.add_text(key, json.dumps(value))
    results = []
    for batch_number, image in enumerate(images):
        pixels = (image.detach().float().cpu() * 255.0).clamp(0, 255).to(torch.uint8).numpy()  # truncates, as ComfyUI
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        with atomic_path(folder / name) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG", pnginfo=metadata, compress_level=compress_level)
        results.append({"filename": name, "subfolder": subfolder, "type": folder_type})
        counter += 1
    return results


# --------------------------------------------------------------------------- loaders / conditioning
class CheckpointLoaderSimple:
    """Loads a diffusion model checkpoint; "tiny-sd (built-in)" is a random-weight model
    built in code for pipelines and tests, not for pictures."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (_checkpoint_names(), {
            "tooltip": "The name of the checkpoint (model) to load. \"tiny-sd (built-in)\" has random "
                       "weights: for pipelines and tests, not for pictures. \"tiny-sdxl (built-in)\" is its "
                       "SDXL counterpart (about 1.4 GB of random weights)."})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("The model used for denoising latents.",
                       "The CLIP model used for encoding text prompts.",
                       "The VAE model used for encoding and decoding images to and from latent space.")
    FUNCTION = "load_checkpoint"
    CATEGORY = "loaders"
    DESCRIPTION = __doc__

    @classmethod
    def VALIDATE_INPUTS(cls, ckpt_name):
        try:
            _check_checkpoint(ckpt_name)
        except InputError as exc:
            return str(exc)
        return True

    def load_checkpoint(self, ckpt_name):
        from ..hypernet.sd.components import CheckpointError
        from ..hypernet.sd.headless import headless_objects
        from ..hypernet.sd.loading import load_components

        device = HOST.torch_device()
        dtype = torch.float16 if device.type == "cuda" else None
        try:
            components = load_components(_resolve_checkpoint(ckpt_name), device=device, dtype=dtype,
                                         tokenizer_dirs=HOST.model_folders("tokenizers"))
        except CheckpointError as exc:
            raise InputError("ckpt_name", str(exc)) from None
        return headless_objects(components)


class CLIPTextEncode:
    """Encodes a text prompt with a CLIP model into conditioning for the diffusion model."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}),
            "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("A conditioning containing the embedded text used to guide the diffusion model.",)
    FUNCTION = "encode"
    CATEGORY = "conditioning"
    DESCRIPTION = __doc__

    def encode(self, clip, text):
        if clip is None:
            raise RuntimeError("CLIPTextEncode: input 'clip' is None (the checkpoint has no text encoder)")
        cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
        return ([[cond, {"pooled_output": pooled}]],)


class CLIPSetLastLayer:
    """Reads the text encoder's output at an earlier layer ("clip skip")."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The CLIP model to change."}),
            "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1,
                                           "tooltip": "-1 = last layer, -2 = the one before (clip skip 2)."}),
        }}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"
    CATEGORY = "conditioning"
    DESCRIPTION = __doc__

    def set_last_layer(self, clip, stop_at_clip_layer):
        clip = clip.clone()
        clip.clip_layer(stop_at_clip_layer)
        return (clip,)


class CLIPTextEncodeSDXL:
    """Encodes text for SDXL: text_g with OpenCLIP-G, text_l with CLIP-L, and the size values
    (original size, crop's top-left, target size) the model is conditioned on."""

    @classmethod
    def INPUT_TYPES(cls):
        def size(default):
            return ("INT", {"default": default, "min": 0, "max": MAX_RESOLUTION})  # ComfyUI gives no step

        text = ("STRING", {"multiline": True, "dynamicPrompts": True})
        return {"required": {"clip": ("CLIP",), "width": size(1024), "height": size(1024), "crop_w": size(0),
                             "crop_h": size(0), "target_width": size(1024), "target_height": size(1024),
                             "text_g": text, "text_l": text}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "execute"
    CATEGORY = "advanced/conditioning"
    DESCRIPTION = __doc__

    def execute(self, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        if not hasattr(clip, "tokenize_pair"):
            raise ValueError("CLIPTextEncodeSDXL: input 'clip' is not an SDXL checkpoint's CLIP (it has no "
                             "OpenCLIP-G text encoder); use CLIPTextEncode")
        cond, pooled = clip.encode_from_tokens(clip.tokenize_pair(text_g, text_l), return_pooled=True)
        return ([[cond, {"pooled_output": pooled, "width": width, "height": height, "crop_w": crop_w,
                         "crop_h": crop_h, "target_width": target_width, "target_height": target_height}]],)


# --------------------------------------------------------------------------- latents / sampling
class EmptyLatentImage:
    """Creates a batch of empty (zero) latent images to be denoised by sampling."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                              "tooltip": "The width of the latent images in pixels."}),
            "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                               "tooltip": "The height of the latent images in pixels."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096,
                                   "tooltip": "The number of latent images in the batch."}),
        }}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent image batch.",)
    FUNCTION = "generate"
    CATEGORY = "latent"
    DESCRIPTION = __doc__

    def generate(self, width, height, batch_size=1):
        return ({"samples": torch.zeros([batch_size, 4, height // 8, width // 8])},)


class KSampler:
    """Denoises a latent image with the model, guided by positive and negative conditioning."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "The random seed used for creating the noise."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000,
                              "tooltip": "The number of steps used in the denoising process."}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale."}),
            "sampler_name": (list(SAMPLER_NAMES), {"tooltip": "The sampling algorithm."}),
            "scheduler": (list(SCHEDULER_NAMES), {"tooltip": "How noise is removed over the steps."}),
            "positive": ("CONDITIONING", {"tooltip": "What to include in the image."}),
            "negative": ("CONDITIONING", {"tooltip": "What to exclude from the image."}),
            "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "How much of the latent is replaced by noise and redrawn."}),
        }}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"
    CATEGORY = "sampling"
    DESCRIPTION = __doc__

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
               denoise=1.0):
        from ..hypernet.sd.sampling import sample

        progress = HOST.progress_bar(steps)
        model.model_patches_to(model.load_device)
        model.model_patches_to(model.model_dtype())  # as ComfyUI does before sampling
        latent = latent_image["samples"]
        samples = sample(model, latent, _sampler_conditioning(model, positive, latent, "positive"),
                         _sampler_conditioning(model, negative, latent, "negative"),
                         seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                         denoise=denoise, callback=lambda step, total: progress.update_absolute(step, total))
        out = dict(latent_image)
        out["samples"] = samples
        return (out,)


class VAEDecode:
    """Decodes latent images back into pixel space images."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                             "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."})}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image.",)
    FUNCTION = "decode"
    CATEGORY = "latent"
    DESCRIPTION = __doc__

    def decode(self, vae, samples):
        return (vae.decode(samples["samples"]),)


class VAEEncode:
    """Encodes pixel images into latent images (sizes are cropped to multiples of 8)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE", {"tooltip": "The image to encode."}),
                             "vae": ("VAE", {"tooltip": "The VAE model used for encoding."})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "latent"
    DESCRIPTION = __doc__

    def encode(self, vae, pixels):
        return ({"samples": vae.encode(pixels)},)


# --------------------------------------------------------------------------- images
class LoadImage:
    """Loads an image from the input folder; MASK is 1 - alpha (64x64 zeros without alpha)."""

    @classmethod
    def INPUT_TYPES(cls):
        folder = HOST.input_directory()
        files = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []
        return {"required": {"image": (files, {"image_upload": True, "tooltip": "An image in the input folder."})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    CATEGORY = "image"
    DESCRIPTION = __doc__

    @classmethod
    def IS_CHANGED(cls, image):
        return hashlib.sha256(_annotated_input_path(image).read_bytes()).hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        try:
            if not _annotated_input_path(image).is_file():
                return f"Invalid image file: {image}"
        except UnsafePathError as error:
            return f"Invalid image file: {error}"
        return True

    def load_image(self, image):
        from PIL import ImageFile

        path = _annotated_input_path(image)
        try:
            return _load_image_frames(path)
        except OSError:
            # ComfyUI retries a damaged file with Pillow's truncated-image tolerance (its
            # node_helpers.pillow), so a cut-off JPEG still loads, padded with gray.
            previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True
            try:
                return _load_image_frames(path)
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _load_image_frames(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """LoadImage's IMAGE batch and MASK from every frame sized like the first."""
    import numpy as np
    from PIL import Image, ImageOps, ImageSequence

    images, masks = [], []
    with Image.open(path) as opened:
        # An MPO (stereo JPEG) holds views of one picture, not a batch: ComfyUI keeps the first.
        frames = [opened] if opened.format == "MPO" else ImageSequence.Iterator(opened)
        for frame in frames:
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":
                frame = frame.point(lambda value: value * (1 / 255))
            rgb = np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0
            if images and rgb.shape != images[0].shape[1:]:
                continue
            images.append(torch.from_numpy(rgb)[None])
            if frame.mode == "P" and "transparency" in frame.info:
                frame = frame.convert("RGBA")
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - torch.from_numpy(alpha)[None])
            else:
                masks.append(torch.zeros((1, 64, 64), dtype=torch.float32))
    return (torch.cat(images), torch.cat(masks) if len({m.shape for m in masks}) == 1 else masks[0])

class SaveImage:
    """Saves images to the output folder as PNG with the prompt and workflow embedded."""

    compress_level = 4
    folder_type = "output"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images to save."}),
            "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": (
                "The prefix for the file to save. May include a subfolder and %width%, %height%, "
                "%year%... variables; it cannot leave the output folder.")}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = __doc__

    def _base(self) -> Path:
        return HOST.output_directory()

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        try:
            results = _write_pngs(images, self._base(), filename_prefix, self.compress_level, prompt,
                                  extra_pnginfo, self.folder_type)
        except UnsafePathError as error:
            raise ValueError(f"{type(self).__name__}: input 'filename_prefix' {filename_prefix!r} is refused: "
                             f"saving outside the {self.folder_type} folder is not allowed ({error})") from None
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    """Saves the images to the temp folder for a preview."""

    compress_level = 1
    folder_type = "temp"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {"tooltip": "The images to preview."})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def _base(self) -> Path:
        return HOST.temp_directory()

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        return super().save_images(images, f"ComfyUI_temp_{suffix}", prompt, extra_pnginfo)


NODE_CLASS_MAPPINGS: dict = {cls.__name__: cls for cls in (
    CheckpointLoaderSimple, CLIPTextEncode, CLIPTextEncodeSDXL, CLIPSetLastLayer, EmptyLatentImage, KSampler,
    VAEDecode, VAEEncode, LoadImage, PreviewImage, SaveImage)}
# CLIPTextEncodeSDXL has no display name in ComfyUI either (its schema leaves it empty): it shows its ID.
NODE_DISPLAY_NAME_MAPPINGS: dict = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "CLIPSetLastLayer": "CLIP Set Last Layer",
    "EmptyLatentImage": "Empty Latent Image",
    "KSampler": "KSampler",
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "LoadImage": "Load Image",
    "PreviewImage": "Preview Image",
    "SaveImage": "Save Image",
}
