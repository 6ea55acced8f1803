"""SD1.x and SD2.x checkpoints, loaded offline: single files in the original LDM layout and
diffusers folders (without text_encoder_2/). model_family.py tells the family; loading.py calls
in here.

In a single file the UNet and VAE configs are read off the tensor shapes (ldm_configs.py) and
their weights renamed with diffusers' LDM conversion helpers; the text encoder (SD1's CLIP ViT-L
in transformers' layout, SD2's OpenCLIP ViT-H in open_clip's) is renamed with the small mappings
below. Everything is loaded strictly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .components import CheckpointError, Family, PredictionType, SDComponents
from .ldm_configs import unet_config_from_ldm, vae_config_from_ldm
from .ldm_layout import (
    LATENT_SCALE,
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    checkpoint_alphas_cumprod,
    load_strict,
    on_meta,
    text_encoder_config,
)

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTokenizer

_OPENCLIP_LAYER_NAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                         "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


# --------------------------------------------------------------------------- text encoders
def _sd1_text_state(state_dict: dict) -> dict:
    """CLIP ViT-L keys as transformers names them, without the `text_model.` level."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(SD1_TEXT_PREFIX):
            name = key[len(SD1_TEXT_PREFIX):]
            name = name[len("text_model."):] if name.startswith("text_model.") else name
            if not name.endswith("position_ids"):
                out[name] = value
    return out


def _sd2_text_state(state_dict: dict) -> dict:
    """OpenCLIP text-tower keys renamed to transformers' CLIP names (q/k/v split)."""
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(SD2_TEXT_PREFIX):
            continue
        name = key[len(SD2_TEXT_PREFIX):]
        if name == "token_embedding.weight":
            out["embeddings.token_embedding.weight"] = value
        elif name == "positional_embedding":
            out["embeddings.position_embedding.weight"] = value
        elif name.startswith("ln_final."):
            out["final_layer_norm." + name.split(".", 1)[1]] = value
        elif name.startswith("transformer.resblocks."):
            _, _, layer, rest = name.split(".", 3)
            prefix = f"encoder.layers.{layer}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if rest.endswith("weight") else "bias"
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{part}.{kind}"] = chunk.clone()
            else:
                module, kind = rest.rsplit(".", 1)
                out[f"{prefix}{_OPENCLIP_LAYER_NAMES.get(module, module)}.{kind}"] = value
    return out


def _load_text_encoder(state_dict: dict, family: str, tokenizer: "CLIPTokenizer") -> "CLIPTextModel":
    from transformers import CLIPTextModel

    text_state = _sd1_text_state(state_dict) if family == "sd1" else _sd2_text_state(state_dict)
    if "embeddings.token_embedding.weight" not in text_state:
        raise CheckpointError(f"no {family.upper()} text encoder weights found")
    layers = len({k.split(".")[2] for k in text_state if k.startswith("encoder.layers.")})
    config = text_encoder_config(text_state["embeddings.token_embedding.weight"],
                                 int(text_state["embeddings.position_embedding.weight"].shape[0]), layers,
                                 int(text_state["encoder.layers.0.mlp.fc1.weight"].shape[0]),
                                 "quick_gelu" if family == "sd1" else "gelu", tokenizer)
    model = CLIPTextModel(config)
    if any(k.startswith("text_model.") for k in model.state_dict()):  # transformers 4.x nests the model
        text_state = {"text_model." + k: v for k, v in text_state.items()}
    load_strict(model, text_state, "text encoder")
    return model


# --------------------------------------------------------------------------- loaders
def _load_unet_and_vae(state_dict: dict, family: str) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """(UNet, VAE, the UNet's config) from an SD1/SD2 state dict."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from diffusers.models import AutoencoderKL, UNet2DConditionModel

    unet_config = unet_config_from_ldm(state_dict, family)
    if unet_config["in_channels"] != 4:
        raise CheckpointError(f"the UNet takes {unet_config['in_channels']} input channels (an inpainting or "
                              f"depth model); only 4-channel txt2img checkpoints are supported")
    vae_config = vae_config_from_ldm(state_dict)
    unet = on_meta(lambda: UNet2DConditionModel(**unet_config))
    load_strict(unet, convert_ldm_unet_checkpoint(state_dict, unet_config), "UNet")
    vae = on_meta(lambda: AutoencoderKL(**vae_config))
    load_strict(vae, convert_ldm_vae_checkpoint(state_dict, vae_config), "VAE")
    return unet, vae, unet_config


def load_sd_single_file(path: Path, state_dict: dict, family: Family, prediction_type: PredictionType,
                        tokenizer: "CLIPTokenizer") -> SDComponents:
    """SD1/SD2 components from a single file's state dict (`family` already detected as "sd1" or
    "sd2"). Not yet moved, cast or frozen."""
    try:
        unet, vae, unet_config = _load_unet_and_vae(state_dict, family)
        text_encoder = _load_text_encoder(state_dict, family, tokenizer)
    except CheckpointError as error:
        raise CheckpointError(f"{path.name} (detected {family.upper()}): {error}") from None
    except (KeyError, IndexError, RuntimeError) as error:
        raise CheckpointError(f"{path.name} (detected {family.upper()}): the weights do not fit the "
                              f"{family.upper()} layout ({type(error).__name__}: {error})") from error
    return SDComponents(
        unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
        alphas_cumprod=checkpoint_alphas_cumprod(state_dict), prediction_type=prediction_type, family=family,
        name=path.name, latent_scale_factor=LATENT_SCALE, context_dim=int(unet_config["cross_attention_dim"]),
        default_clip_layer=-2 if family == "sd2" else -1,
    )


def sd_folder_unet_config(folder: Path) -> dict:
    """unet/config.json of an SD1/SD2 diffusers folder, once the folder is known to have every
    part and a UNet that is not SDXL's."""
    for part in ("unet", "text_encoder", "vae"):
        if not (folder / part / "config.json").is_file():
            raise CheckpointError(f"{folder.name}: not a diffusers SD folder: {part}/config.json is missing")
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    if unet_config.get("addition_embed_type") == "text_time":
        raise CheckpointError(f"{folder.name}: the UNet is SDXL-type (addition_embed_type text_time) but there is "
                              f"no text_encoder_2/; an SDXL folder needs both text encoders")
    return unet_config


def _folder_context_dim(unet_config: dict) -> int:
    return int(unet_config.get("cross_attention_dim", 768))


def sd_folder_family(unet_config: dict) -> Family:
    """"sd2" for a 1024-wide text context (OpenCLIP-H), else "sd1"."""
    return "sd2" if _folder_context_dim(unet_config) == 1024 else "sd1"


def load_sd_diffusers_folder(folder: Path, unet_config: dict, alphas_cumprod: torch.Tensor,
                             prediction_type: PredictionType, tokenizer: "CLIPTokenizer") -> SDComponents:
    """An SD1/SD2 diffusers folder (unet/, text_encoder/, vae/) whose UNet config
    sd_folder_unet_config read. Not yet moved, cast or frozen."""
    from diffusers.models import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    with torch.inference_mode(False):
        unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
        vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae", local_files_only=True)
    return SDComponents(
        unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
        alphas_cumprod=alphas_cumprod, prediction_type=prediction_type,
        family=sd_folder_family(unet_config), name=folder.name,
        latent_scale_factor=float(vae.config.get("scaling_factor", LATENT_SCALE)),
        context_dim=_folder_context_dim(unet_config),
        # diffusers' SD2 text encoders already stop at OpenCLIP's penultimate layer.
        default_clip_layer=-1,
    )
