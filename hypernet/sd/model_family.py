"""What a single-file checkpoint is: its model family and its prediction type.

- The family is detected from the keys: SD1.x has a CLIP ViT-L text encoder under
  `cond_stage_model.transformer.`, SD2.x an OpenCLIP encoder under `cond_stage_model.model.`
  (and a 1024-wide text context), SDXL base CLIP-L and OpenCLIP-G under `conditioner.embedders.`
  and a `label_emb` taking the pooled output + 6 size embeddings. SDXL refiners,
  inpainting/instruct-pix2pix UNets, EDM/zero-terminal-SNR variants and anything else are
  refused with a message saying what was found.
- The prediction type (SD1 and SDXL are epsilon unless told otherwise), in this order: the
  `model_type` argument ("epsilon"/"eps" or "v_prediction"/"v"); a `v_pred` marker key in the
  file; an LDM config `NAME.yaml` beside the file that sets `parameterization: "v"`; otherwise
  the heuristic ComfyUI applies to SD2: v-prediction when the std of
  `output_blocks.11.1.transformer_blocks.0.norm1.bias` exceeds 0.09 (768-px SD2.x v models
  were trained long enough to move it; the 512-px epsilon base did not).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional

from .components import CheckpointError, Family, PredictionType
from .ldm_layout import (
    ADM_KEY,
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    SDXL_REFINER_TEXT_PREFIX,
    SDXL_TEXT_G_PREFIX,
    SDXL_TEXT_L_PREFIX,
    UNET_PREFIX,
    V_PREDICTION_PROBE,
    cross_attention_width,
)
from .sdxl import SIZE_EMBEDDING_DIM, SIZE_VALUES

_PREDICTION_ALIASES: dict[str, PredictionType] = {
    "epsilon": "epsilon", "eps": "epsilon", "v_prediction": "v_prediction", "v": "v_prediction",
    "v-prediction": "v_prediction"}


def _not_a_checkpoint(keys: Iterable[str], name: str) -> CheckpointError:
    """The error for a file with no UNet, saying what it looks like instead."""
    keys = list(keys)
    sample = ", ".join(sorted(keys)[:5]) or "no tensors"
    if any(k.startswith(("lora_", "lora_unet_", "lora_te")) or ".lora_" in k for k in keys):
        kind = "a LoRA"
    elif any(k.startswith(("encoder.", "decoder.")) for k in keys):
        kind = "a standalone VAE"
    elif any(k.startswith(("down_blocks.", "conv_in.")) for k in keys):
        kind = "a diffusers-layout UNet (load its diffusers folder instead)"
    elif all(isinstance(k, str) and k.isdigit() for k in keys):
        kind = "a hypernetwork"
    else:
        kind = "an unknown layout"
    return CheckpointError(f"{name}: not a Stable Diffusion checkpoint: no '{UNET_PREFIX}*' keys; it looks like "
                           f"{kind} (first keys: {sample})")


def _looks_like_sdxl(state_dict: dict) -> bool:
    """SGM-layout text encoders, or a UNet with SDXL's added (pooled + size) conditioning input."""
    adm = state_dict.get(ADM_KEY)
    adm_width = int(adm.shape[1]) if adm is not None and adm.ndim == 2 else 0
    has_cond_stage = any(k.startswith("cond_stage_model.") for k in state_dict)
    # SD2-unCLIP also has a label_emb (1536/2048 wide), but with SD2's cond_stage_model encoder.
    return any(k.startswith("conditioner.embedders.") for k in state_dict) or (adm_width > 0 and not has_cond_stage)


def _sdxl_refusal(state_dict: dict) -> Optional[str]:
    """Why an SDXL-like checkpoint is not an SDXL *base* this loader runs, or None when it is."""
    keys = state_dict.keys()
    if any(k.startswith(SDXL_REFINER_TEXT_PREFIX) for k in keys):
        return ("an SDXL refiner (its OpenCLIP-G encoder is at 'conditioner.embedders.0.model.' and there is no "
                "CLIP-L; its UNet is conditioned on an aesthetic score); only SDXL base checkpoints are supported")
    markers = {"edm_mean": "Playground v2.5 (EDM sampling, its own latent format)",
               "edm_vpred.sigma_max": "an EDM v-prediction SDXL model", "ztsnr": "a zero-terminal-SNR SDXL model"}
    for marker, kind in markers.items():
        if marker in keys:
            return f"{kind} (found the '{marker}' key); only SDXL base-style (DDPM) checkpoints are supported"
    missing = [prefix for prefix in (SDXL_TEXT_L_PREFIX, SDXL_TEXT_G_PREFIX)
               if not any(k.startswith(prefix) for k in keys)]
    if missing or ADM_KEY not in keys:
        return (f"an SDXL-style checkpoint without {', '.join(repr(p + '*') for p in missing) or repr(ADM_KEY)}; "
                f"an SDXL base file has CLIP-L, OpenCLIP-G and a UNet with pooled/size conditioning")
    pooled = state_dict.get(SDXL_TEXT_G_PREFIX + "text_projection")
    pooled_width = int(pooled.shape[1]) if pooled is not None and pooled.ndim == 2 else 0
    adm_width = int(state_dict[ADM_KEY].shape[1])
    # The refiner embeds 5 values: the size, the crop and an aesthetic score in place of the target size.
    if adm_width == pooled_width + (SIZE_VALUES - 1) * SIZE_EMBEDDING_DIM:
        return (f"an SDXL refiner-style UNet (its added conditioning is {adm_width} wide: pooled + 5 values with "
                f"the aesthetic score); only SDXL base checkpoints are supported")
    if adm_width != pooled_width + SIZE_VALUES * SIZE_EMBEDDING_DIM:
        return (f"an SDXL-style UNet whose added conditioning is {adm_width} wide; SDXL base takes the pooled "
                f"output ({pooled_width}) + {SIZE_VALUES} size values x {SIZE_EMBEDDING_DIM}")
    conv_in = state_dict.get(UNET_PREFIX + "input_blocks.0.0.weight")
    in_channels = int(conv_in.shape[1]) if conv_in is not None and conv_in.ndim == 4 else 4
    if in_channels != 4:
        kind = {9: "an SDXL inpainting model", 8: "an SDXL instruct-pix2pix model"}.get(in_channels, "an SDXL model")
        return (f"{kind} (the UNet takes {in_channels} input channels); only 4-channel txt2img checkpoints "
                f"are supported")
    return None


def detect_family(state_dict: dict, name: str = "checkpoint") -> Family:
    """"sd1", "sd2" or "sdxl" (SDXL base) for an LDM/SGM-layout state dict; CheckpointError for
    anything else, saying what was found."""
    keys = state_dict.keys()
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        raise _not_a_checkpoint(keys, name)
    if _looks_like_sdxl(state_dict):
        refusal = _sdxl_refusal(state_dict)
        if refusal:
            raise CheckpointError(f"{name}: this is {refusal}")
        return "sdxl"
    context = cross_attention_width(state_dict)
    has_sd1_text = any(k.startswith(SD1_TEXT_PREFIX) for k in keys)
    has_sd2_text = any(k.startswith(SD2_TEXT_PREFIX + "transformer.resblocks.") for k in keys)
    if has_sd2_text or (context == 1024 and not has_sd1_text):
        return "sd2"
    if has_sd1_text or context == 768:
        return "sd1"
    raise CheckpointError(f"{name}: UNet found but no known text encoder (neither '{SD1_TEXT_PREFIX}*' nor "
                          f"'{SD2_TEXT_PREFIX}transformer.*'; cross-attention width {context})")


def detect_prediction_type(state_dict: dict, family: str, path: Optional[Path] = None,
                           model_type: Optional[str] = None) -> PredictionType:
    """Explicit `model_type` > `v_pred` key > NAME.yaml `parameterization: "v"` > the SD2 heuristic."""
    if model_type:
        try:
            return _PREDICTION_ALIASES[model_type.lower()]
        except KeyError:
            raise CheckpointError(f"model_type must be one of {sorted(_PREDICTION_ALIASES)}, "
                                  f"got {model_type!r}") from None
    if "v_pred" in state_dict:
        return "v_prediction"
    if path is not None:
        yaml_path = path.with_suffix(".yaml")
        if yaml_path.is_file():
            text = yaml_path.read_text(encoding="utf-8", errors="replace")
            if re.search(r"parameterization:\s*[\"']?v[\"']?\s*$", text, re.MULTILINE):
                return "v_prediction"
            return "epsilon"
    if family == "sd2":
        probe = state_dict.get(V_PREDICTION_PROBE)
        if probe is not None and float(probe.float().std(unbiased=False)) > 0.09:
            return "v_prediction"
    return "epsilon"
