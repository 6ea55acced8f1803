"""SDXL base checkpoints, loaded offline: single files in the original SGM layout and diffusers
folders (with text_encoder_2/). model_family.py tells the family; loading.py calls in here.

A single file holds four parts, each converted with diffusers' own helpers and loaded strictly:
- `model.diffusion_model.`: the UNet. Its diffusers config is read off the tensor shapes: widths,
  res blocks, the transformer depth of every input and output block and of the middle block,
  and the added-conditioning width; convert_ldm_unet_checkpoint maps the SDXL-only `label_emb`
  keys only when the config says addition_embed_type="text_time", so the config always does.
  Depth patterns other than SDXL base's (distilled SSD-1B/Vega-like UNets, the middle block's
  depth differing from the last level's) load when diffusers can express them: per-block depths
  on both sides, and a rebuilt middle block; a level that mixes blocks with and without attention
  cannot be expressed and is refused.
- `first_stage_model.`: the VAE (SD1's layout; scale factor 0.13025).
- `conditioner.embedders.0.transformer.text_model.`: CLIP ViT-L in transformers' layout.
- `conditioner.embedders.1.model.`: OpenCLIP ViT-bigG in open_clip's layout (packed q/k/v, a
  text projection used as x @ P), into a CLIPTextModelWithProjection.
Every tensor of the four parts must land in a model: the loader counts the numbers on both
sides, so a key a helper silently skips is an error. Only CLIP-L's position ids (a fixed
buffer) and OpenCLIP's logit_scale (the contrastive temperature, unused for text
conditioning) are left out on purpose.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from .components import CheckpointError, PredictionType, SDComponents
from .ldm_configs import group_count, transformer_depth, unet_levels, vae_config_from_ldm
from .ldm_layout import (
    ADM_KEY,
    SDXL_TEXT_G_PREFIX,
    SDXL_TEXT_L_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    ModuleT,
    checkpoint_alphas_cumprod,
    load_strict,
    on_meta,
    text_encoder_config,
)
from .sdxl import SDXL_HEAD_CHANNELS, SDXL_LATENT_SCALE, SIZE_EMBEDDING_DIM, SIZE_VALUES

if TYPE_CHECKING:
    from diffusers.models import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

IGNORED_KEYS = (SDXL_TEXT_L_PREFIX + "text_model.embeddings.position_ids", SDXL_TEXT_G_PREFIX + "logit_scale")


# --------------------------------------------------------------------------- UNet
def _level_has_attention(depths: list[int], where: str) -> bool:
    """Whether a level's blocks have attention: all of them or none (one diffusers block type per level)."""
    if any(depths) and not all(depths):
        raise CheckpointError(f"the UNet's {where} mixes blocks with and without attention (transformer depths "
                              f"{depths}); diffusers cannot express this SDXL variant")
    return bool(depths and depths[0])


def _output_depths(unet_state: dict, levels: int, blocks_per_level: int) -> list[list[int]]:
    """Transformer depth of each output block, grouped by level from the lowest resolution up."""
    return [[transformer_depth(unet_state, f"output_blocks.{level * blocks_per_level + block}.1")
             for block in range(blocks_per_level)] for level in range(levels)]


def sdxl_unet_config_from_ldm(state_dict: dict) -> tuple[dict, int]:
    """(diffusers UNet2DConditionModel config, middle-block transformer depth) read off an SDXL
    UNet's tensor shapes. The middle depth is returned apart because diffusers' config always
    gives the middle block the last level's depth (see build_sdxl_unet)."""
    unet_state = {k[len(UNET_PREFIX):]: v for k, v in state_dict.items() if k.startswith(UNET_PREFIX)}
    levels = unet_levels(unet_state)
    layers_per_block = levels[0]["resnets"]
    if any(level["resnets"] != layers_per_block for level in levels):
        raise CheckpointError(f"the UNet's levels have different res-block counts "
                              f"{[level['resnets'] for level in levels]}")
    widths = [level["channels"] for level in levels]
    input_depths = [level["depths"] for level in levels]
    output_depths = _output_depths(unet_state, len(levels), layers_per_block + 1)
    down_attention = [_level_has_attention(d, f"input level {i}") for i, d in enumerate(input_depths)]
    up_attention = [_level_has_attention(d, f"output level {i}") for i, d in enumerate(output_depths)]
    config = {
        "sample_size": 128, "in_channels": int(unet_state["input_blocks.0.0.weight"].shape[1]),
        "out_channels": int(unet_state["out.2.weight"].shape[0]),
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attention),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention),
        "block_out_channels": tuple(widths), "layers_per_block": layers_per_block,
        "cross_attention_dim": int(next(v for k, v in unet_state.items() if k.endswith("attn2.to_k.weight")).shape[1]),
        "attention_head_dim": tuple(max(w // SDXL_HEAD_CHANNELS, 1) for w in widths),  # diffusers: the head count
        "use_linear_projection": unet_state[next(k for k in unet_state if k.endswith(".proj_in.weight"))].ndim == 2,
        "addition_embed_type": "text_time", "addition_time_embed_dim": SIZE_EMBEDDING_DIM,
        "projection_class_embeddings_input_dim": int(unet_state[ADM_KEY[len(UNET_PREFIX):]].shape[1]),
        "norm_num_groups": group_count(widths),
    }
    config.update(_depth_config(input_depths, output_depths))
    return config, transformer_depth(unet_state, "middle_block.1")


def _depth_config(input_depths: list[list[int]], output_depths: list[list[int]]) -> dict:
    """transformer_layers_per_block (and, when the output side is not the mirror of the input
    side, reverse_transformer_layers_per_block) with 1 for blocks without attention."""
    mirrored = all(len(set(depths)) == 1 for depths in input_depths) and \
        output_depths == [[depths[0]] * len(out) for depths, out in zip(reversed(input_depths), output_depths)]
    if mirrored:  # SDXL base's own shape: one depth per level, e.g. (1, 2, 10)
        return {"transformer_layers_per_block": tuple(max(depths[0], 1) for depths in input_depths)}
    return {"transformer_layers_per_block": tuple(tuple(max(d, 1) for d in depths) for depths in input_depths),
            "reverse_transformer_layers_per_block": tuple(tuple(max(d, 1) for d in depths)
                                                          for depths in output_depths)}


def build_sdxl_unet(config: dict, middle_depth: int) -> "UNet2DConditionModel":
    """The UNet for `config` on the meta device, its middle block rebuilt when the checkpoint's
    middle depth differs from the last level's (UNet2DConditionModel cannot say so in its config,
    so such a UNet's own config keeps the last level's depth: save_pretrained would not round-trip it)."""
    from diffusers.models import UNet2DConditionModel
    from diffusers.models.unets.unet_2d_blocks import get_mid_block

    if middle_depth < 1:
        raise CheckpointError("the UNet's middle block has no transformer; not an SDXL layout diffusers builds")
    unet: UNet2DConditionModel = on_meta(lambda: UNet2DConditionModel(**config))
    last_depth = config["transformer_layers_per_block"][-1]
    if (last_depth if isinstance(last_depth, int) else last_depth[0]) != middle_depth:
        c = unet.config
        unet.mid_block = on_meta(lambda: get_mid_block(
            "UNetMidBlock2DCrossAttn", temb_channels=unet.time_embedding.linear_2.out_features,
            in_channels=c["block_out_channels"][-1], resnet_eps=c["norm_eps"], resnet_act_fn=c["act_fn"],
            resnet_groups=c["norm_num_groups"], output_scale_factor=c["mid_block_scale_factor"],
            transformer_layers_per_block=middle_depth, num_attention_heads=c["attention_head_dim"][-1],
            cross_attention_dim=c["cross_attention_dim"], use_linear_projection=c["use_linear_projection"],
            upcast_attention=c["upcast_attention"], resnet_time_scale_shift=c["resnet_time_scale_shift"]))
    return unet


# --------------------------------------------------------------------------- text encoders
def _fit_text_model_level(module: torch.nn.Module, state: dict) -> dict:
    """Add or strip the `text_model.` level that transformers versions disagree on (5.x dropped
    it from CLIPTextModel but keeps it in CLIPTextModelWithProjection)."""
    nested = any(key.startswith("text_model.") for key in module.state_dict())
    fitted = {}
    for key, value in state.items():
        bare = key[len("text_model."):] if key.startswith("text_model.") else key
        fitted["text_model." + bare if nested and not bare.startswith("text_projection.") else bare] = value
    return fitted


def _on_meta_text_model(factory: Callable[[], ModuleT]) -> ModuleT:
    """A CLIP text model built without allocating its weights, except the position-id buffer:
    transformers does not save it (it is 0..76), so the checkpoint cannot fill it."""
    model = on_meta(factory)
    for module in model.modules():
        ids = module._buffers.get("position_ids")
        if ids is not None and ids.is_meta:
            module.register_buffer("position_ids", torch.arange(ids.shape[-1]).expand(ids.shape), persistent=False)
    return model


def _load_clip_l(state_dict: dict, tokenizer: "CLIPTokenizer") -> "CLIPTextModel":
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
    from transformers import CLIPTextModel

    source = {k: v for k, v in state_dict.items() if k.startswith(SDXL_TEXT_L_PREFIX) and k not in IGNORED_KEYS}
    converted = convert_ldm_clip_checkpoint(source)
    _check_all_converted(source, converted, "CLIP-L text encoder")
    prefix = "text_model." if any(k.startswith("text_model.") for k in converted) else ""
    layers = len({k.split(".")[2 + bool(prefix)] for k in converted if k.startswith(prefix + "encoder.layers.")})
    config = text_encoder_config(converted[prefix + "embeddings.token_embedding.weight"],
                                  int(converted[prefix + "embeddings.position_embedding.weight"].shape[0]), layers,
                                  int(converted[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]), "quick_gelu",
                                  tokenizer)
    model = _on_meta_text_model(lambda: CLIPTextModel(config))
    load_strict(model, _fit_text_model_level(model, converted), "CLIP-L text encoder")
    return model


def _load_clip_g(state_dict: dict, tokenizer: "CLIPTokenizer") -> "CLIPTextModelWithProjection":
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextModelWithProjection

    source = {k: v for k, v in state_dict.items() if k.startswith(SDXL_TEXT_G_PREFIX) and k not in IGNORED_KEYS}
    layers = len({k.split(".")[len(SDXL_TEXT_G_PREFIX.split(".")) + 1]
                  for k in source if k.startswith(SDXL_TEXT_G_PREFIX + "transformer.resblocks.")})
    projection = source[SDXL_TEXT_G_PREFIX + "text_projection"]
    config = text_encoder_config(source[SDXL_TEXT_G_PREFIX + "token_embedding.weight"],
                                  int(source[SDXL_TEXT_G_PREFIX + "positional_embedding"].shape[0]), layers,
                                  int(source[SDXL_TEXT_G_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
                                  "gelu", tokenizer, projection_dim=int(projection.shape[1]))
    model = _on_meta_text_model(lambda: CLIPTextModelWithProjection(config))
    converted = convert_open_clip_checkpoint(model, source, prefix=SDXL_TEXT_G_PREFIX)
    _check_all_converted(source, converted, "OpenCLIP-G text encoder")
    load_strict(model, _fit_text_model_level(model, converted), "OpenCLIP-G text encoder")
    return model


def _check_all_converted(source: dict, converted: dict, what: str) -> None:
    """Every number of `source` reached `converted` (q/k/v splits and transposes keep the count):
    a key a conversion helper skipped without a word becomes an error here."""
    have, want = sum(v.numel() for v in converted.values()), sum(v.numel() for v in source.values())
    if have != want:
        raise CheckpointError(f"{what}: the conversion kept {have:,} of {want:,} weights ({len(converted)} tensors "
                              f"from {len(source)}); this file's layout is not the SDXL base one")


def sdxl_tokenizers(tokenizer: "CLIPTokenizer") -> tuple["CLIPTokenizer", "CLIPTokenizer"]:
    """(CLIP-L's, OpenCLIP-G's) tokenizers: one vocabulary, as in ComfyUI; G's pads with "!" (id 0)."""
    tokenizer_2 = copy.deepcopy(tokenizer)
    tokenizer_2.pad_token = "!"
    return tokenizer, tokenizer_2


# --------------------------------------------------------------------------- loaders
def _load_unet_and_vae(state_dict: dict) -> tuple["UNet2DConditionModel", "AutoencoderKL"]:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from diffusers.models import AutoencoderKL

    unet_config, middle_depth = sdxl_unet_config_from_ldm(state_dict)
    unet = build_sdxl_unet(unet_config, middle_depth)
    unet_source = {k: v for k, v in state_dict.items() if k.startswith(UNET_PREFIX)}
    converted = convert_ldm_unet_checkpoint(unet_source, unet_config)
    _check_all_converted(unet_source, converted, "UNet")
    load_strict(unet, converted, "UNet")
    vae_config = dict(vae_config_from_ldm(state_dict), scaling_factor=SDXL_LATENT_SCALE)
    vae = on_meta(lambda: AutoencoderKL(**vae_config))
    vae_source = {k: v for k, v in state_dict.items() if k.startswith(VAE_PREFIX)}
    converted = convert_ldm_vae_checkpoint(vae_source, vae_config)
    _check_all_converted(vae_source, converted, "VAE")
    load_strict(vae, converted, "VAE")
    return unet, vae


def load_sdxl_single_file(path: Path, state_dict: dict, prediction_type: PredictionType,
                          tokenizer: "CLIPTokenizer") -> SDComponents:
    """SDXL base components from a single file's state dict (family already detected as "sdxl");
    `tokenizer` is CLIP's, padding with the end token. Not yet moved, cast or frozen."""
    tokenizer, tokenizer_2 = sdxl_tokenizers(tokenizer)
    try:
        unet, vae = _load_unet_and_vae(state_dict)
        text_encoder = _load_clip_l(state_dict, tokenizer)
        text_encoder_2 = _load_clip_g(state_dict, tokenizer_2)
    except CheckpointError as error:
        raise CheckpointError(f"{path.name} (detected SDXL): {error}") from None
    except (KeyError, IndexError, StopIteration, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path.name} (detected SDXL): the weights do not fit the SDXL layout "
                              f"({type(error).__name__}: {error})") from error
    return SDComponents(
        unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
        alphas_cumprod=checkpoint_alphas_cumprod(state_dict),
        prediction_type=prediction_type, family="sdxl", name=path.name, latent_scale_factor=SDXL_LATENT_SCALE,
        context_dim=int(unet.config["cross_attention_dim"]), default_clip_layer=-2,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
    )


def _check_sdxl_folder(folder: Path, unet_config: dict) -> None:
    """Refuse diffusers SDXL folders this engine does not run (refiner, inpainting), saying which."""
    if unet_config.get("addition_embed_type") != "text_time":
        raise CheckpointError(f"{folder.name}: has text_encoder_2/ but its UNet takes no pooled/size conditioning "
                              f"(addition_embed_type {unet_config.get('addition_embed_type')!r}); not SDXL base")
    pooled = json.loads((folder / "text_encoder_2" / "config.json").read_text()).get("projection_dim", 1280)
    adm = unet_config.get("projection_class_embeddings_input_dim")
    if adm != pooled + SIZE_VALUES * SIZE_EMBEDDING_DIM:
        raise CheckpointError(f"{folder.name}: the UNet's added conditioning is {adm} wide, not SDXL base's "
                              f"{pooled + SIZE_VALUES * SIZE_EMBEDDING_DIM} (an SDXL refiner takes the aesthetic "
                              f"score)")
    if unet_config.get("in_channels", 4) != 4:
        raise CheckpointError(f"{folder.name}: the UNet takes {unet_config['in_channels']} input channels (an "
                              f"inpainting model); only 4-channel txt2img checkpoints are supported")


def load_sdxl_diffusers_folder(folder: Path, alphas_cumprod: torch.Tensor, prediction_type: PredictionType,
                               tokenizer: "CLIPTokenizer") -> SDComponents:
    """An SDXL base diffusers folder: unet/, text_encoder/ (CLIP-L), text_encoder_2/ (OpenCLIP-G
    with projection), vae/. Both tokenizers are built from `tokenizer` (one vocabulary, as in
    ComfyUI; see sdxl_tokenizers). Not yet moved, cast or frozen."""
    from diffusers.models import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    for part in ("unet", "text_encoder", "text_encoder_2", "vae"):
        if not (folder / part / "config.json").is_file():
            raise CheckpointError(f"{folder.name}: not a diffusers SDXL folder: {part}/config.json is missing")
    _check_sdxl_folder(folder, json.loads((folder / "unet" / "config.json").read_text()))
    tokenizer, tokenizer_2 = sdxl_tokenizers(tokenizer)
    with torch.inference_mode(False):
        unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(str(folder / "text_encoder_2"),
                                                                     local_files_only=True)
        vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae", local_files_only=True)
    return SDComponents(
        unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae, alphas_cumprod=alphas_cumprod,
        prediction_type=prediction_type, family="sdxl", name=folder.name,
        latent_scale_factor=float(vae.config.get("scaling_factor", SDXL_LATENT_SCALE)),
        context_dim=int(unet.config.cross_attention_dim), default_clip_layer=-2,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
    )
