"""Offline checkpoint loading, the entry points: the built-in tiny models, single files in the
original Stable Diffusion layout (ldm_layout.py) and diffusers folders. Nothing is ever fetched
from a hub; the CLIP tokenizer comes from local files only (see tokenizer.py).

A single file's family and prediction type are detected first (model_family.py), then the
family's loader builds the components (sd_checkpoint.py for SD1.x/SD2.x, sdxl_checkpoint.py for
SDXL base); here they are moved, cast and frozen.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional, Union

import torch

from ..safe_load import PathLike
from .components import CheckpointError, PredictionType, SDComponents, scaled_linear_alphas_cumprod
from .ldm_layout import read_state_dict
from .model_family import detect_family, detect_prediction_type
from .sd_checkpoint import load_sd_diffusers_folder, load_sd_single_file, sd_folder_family, sd_folder_unet_config
from .sdxl_checkpoint import load_sdxl_diffusers_folder, load_sdxl_single_file
from .tiny import TINY_MODEL_NAME, TINY_SDXL_MODEL_NAME, build_tiny_components
from .tiny_sdxl import build_tiny_sdxl_components
from .tokenizer import find_tokenizer

Device = Optional[Union[str, torch.device]]


def _finish(components: SDComponents, device: Device, dtype: Optional[torch.dtype]) -> SDComponents:
    """Move to `device`; cast UNet and text encoders to `dtype` (default fp32, whatever the
    file stores: fp16 files are common) and the VAE to fp32, since SD VAEs (SDXL's above all)
    overflow in fp16; freeze everything."""
    for attribute in components.module_names():
        module = getattr(components, attribute)
        target_dtype = torch.float32 if attribute == "vae" or dtype is None else dtype
        module.to(device=device, dtype=target_dtype)
        module.eval().requires_grad_(False)
    return components


def load_single_file(path: PathLike, device: Device = None, dtype: Optional[torch.dtype] = None,
                     model_type: Optional[str] = None, tokenizer_dirs: Iterable[PathLike] = ()) -> SDComponents:
    """An SD1.x/SD2.x checkpoint in the original LDM key layout, or an SDXL base one in the
    original SGM layout (see sdxl_checkpoint.py)."""
    path = Path(path)
    state_dict = read_state_dict(path)
    family = detect_family(state_dict, path.name)
    prediction_type = detect_prediction_type(state_dict, family, path, model_type)
    tokenizer = find_tokenizer(family, path, tokenizer_dirs)
    if family == "sdxl":
        return _finish(load_sdxl_single_file(path, state_dict, prediction_type, tokenizer), device, dtype)
    return _finish(load_sd_single_file(path, state_dict, family, prediction_type, tokenizer), device, dtype)


def _alphas_from_scheduler_config(config: dict) -> torch.Tensor:
    schedule = config.get("beta_schedule", "scaled_linear")
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    steps = int(config.get("num_train_timesteps", 1000))
    if schedule == "scaled_linear":
        alphas = scaled_linear_alphas_cumprod(steps, start, end)
    elif schedule == "linear":
        betas = torch.linspace(start, end, steps, dtype=torch.float64)
        alphas = torch.cumprod(1.0 - betas, dim=0).float()
    else:
        raise CheckpointError(f"scheduler beta_schedule {schedule!r} is not supported")
    if steps != 1000:
        raise CheckpointError(f"scheduler has {steps} training steps; 1000 are expected")
    return alphas


def _scheduler_settings(folder: Path, model_type: Optional[str]) -> tuple[torch.Tensor, PredictionType]:
    """(alphas_cumprod, prediction type) from a diffusers folder's scheduler/ (defaults: SD's)."""
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    scheduler_config = json.loads(scheduler_file.read_text()) if scheduler_file.is_file() else {}
    prediction_type = detect_prediction_type({}, "sd1", None, model_type or scheduler_config.get(
        "prediction_type", "epsilon"))
    return _alphas_from_scheduler_config(scheduler_config), prediction_type


def load_diffusers_folder(folder: PathLike, device: Device = None, dtype: Optional[torch.dtype] = None,
                          model_type: Optional[str] = None, tokenizer_dirs: Iterable[PathLike] = ()) -> SDComponents:
    """A diffusers pipeline folder (unet/, text_encoder/, vae/, tokenizer/, scheduler/); with
    text_encoder_2/ an SDXL base one (see sdxl_checkpoint.py)."""
    folder = Path(folder)
    if (folder / "text_encoder_2").exists():
        alphas, prediction_type = _scheduler_settings(folder, model_type)
        tokenizer = find_tokenizer("sdxl", folder, tokenizer_dirs)
        return _finish(load_sdxl_diffusers_folder(folder, alphas, prediction_type, tokenizer), device, dtype)
    unet_config = sd_folder_unet_config(folder)
    alphas, prediction_type = _scheduler_settings(folder, model_type)
    tokenizer = find_tokenizer(sd_folder_family(unet_config), folder, tokenizer_dirs)
    return _finish(load_sd_diffusers_folder(folder, unet_config, alphas, prediction_type, tokenizer), device, dtype)


def load_components(path_or_name: PathLike, device: Device = None, dtype: Optional[torch.dtype] = None,
                    model_type: Optional[str] = None, tokenizer_dirs: Iterable[PathLike] = ()) -> SDComponents:
    """Load "tiny-sd (built-in)", "tiny-sdxl (built-in)", a diffusers folder, or an SD1.x/SD2.x/
    SDXL-base single file.

    `model_type` forces the prediction type ("epsilon"/"v_prediction"); `tokenizer_dirs` are
    extra folders searched for CLIP tokenizer files. Weights are created outside
    inference_mode so that training can backpropagate through them."""
    if str(path_or_name) == TINY_MODEL_NAME:
        return build_tiny_components(device=device, dtype=dtype)
    if str(path_or_name) == TINY_SDXL_MODEL_NAME:
        return build_tiny_sdxl_components(device=device, dtype=dtype)
    path = Path(path_or_name)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    with torch.inference_mode(False):
        if path.is_dir():
            return load_diffusers_folder(path, device, dtype, model_type, tokenizer_dirs)
        return load_single_file(path, device, dtype, model_type, tokenizer_dirs)
