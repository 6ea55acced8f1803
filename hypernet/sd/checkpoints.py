"""Offline checkpoint loading: single files in the original Stable Diffusion (LDM) layout,
diffusers folders, and the built-in tiny model. Nothing is ever fetched from a hub.

Single files (`.safetensors`/`.sft`, or `.ckpt`/`.pt`/`.pth`/`.bin` read with
`torch.load(weights_only=True)`, a top-level "state_dict" unwrapped):
- the family is detected from the keys: SD1.x has a CLIP ViT-L text encoder under
  `cond_stage_model.transformer.`, SD2.x an OpenCLIP encoder under `cond_stage_model.model.`
  (and a 1024-wide text context), SDXL base CLIP-L and OpenCLIP-G under `conditioner.embedders.`
  and a `label_emb` taking the pooled output + 6 size embeddings (loaded by sdxl_checkpoint.py).
  SDXL refiners, inpainting/instruct-pix2pix UNets, EDM/zero-terminal-SNR variants and anything
  else are refused with a message saying what was found;
- configs are built in code from the tensor shapes (widths, depths, attention levels,
  linear vs conv projections), then the UNet and VAE weights are renamed with diffusers'
  LDM conversion helpers and the text encoder with the small mappings below;
- prediction type (SD1 and SDXL are epsilon unless told otherwise), in this order: the `model_type`
  argument ("epsilon"/"eps" or "v_prediction"/"v"); a `v_pred` marker key in the file; an
  LDM config `NAME.yaml` beside the file that sets `parameterization: "v"`; otherwise the
  heuristic ComfyUI applies to SD2: v-prediction when the std of
  `output_blocks.11.1.transformer_blocks.0.norm1.bias` exceeds 0.09 (768-px SD2.x v models
  were trained long enough to move it; the 512-px epsilon base did not).

The CLIP tokenizer comes from local files only (see tokenizer.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Union

import torch

from ..safe_load import UnreadableFile, load_safetensors, load_torch_weights
from .components import CheckpointError, SDComponents, scaled_linear_alphas_cumprod
from .sdxl import SIZE_EMBEDDING_DIM, SIZE_VALUES
from .tiny import TINY_MODEL_NAME, TINY_SDXL_MODEL_NAME, build_tiny_components
from .tokenizer import find_tokenizer

if TYPE_CHECKING:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_L_PREFIX = "conditioner.embedders.0.transformer."  # CLIP ViT-L, transformers' layout
SDXL_TEXT_G_PREFIX = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG, open_clip's layout
SDXL_REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."  # the refiner has OpenCLIP-G alone, first
ADM_KEY = UNET_PREFIX + "label_emb.0.0.weight"
LATENT_SCALE = 0.18215
V_PREDICTION_PROBE = UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"

PathLike = Union[str, Path]


# --------------------------------------------------------------------------- reading files
def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a single-file checkpoint; pickles are read with weights_only=True."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            return load_safetensors(path, "a checkpoint")[0]
        if suffix in PICKLE_SUFFIXES:
            data = load_torch_weights(path, "a checkpoint")
        else:
            raise CheckpointError(f"{path.name}: unsupported checkpoint extension {suffix!r} "
                                  f"(use {sorted(SAFETENSORS_SUFFIXES | PICKLE_SUFFIXES)} or a diffusers folder)")
    except UnreadableFile as exc:
        raise CheckpointError(str(exc)) from None
    while isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name}: expected a dict of tensors, found {type(data).__name__}")
    return {key: value for key, value in data.items() if torch.is_tensor(value)}


# --------------------------------------------------------------------------- detection
def _cross_attention_width(state_dict: dict) -> Optional[int]:
    for key, value in state_dict.items():
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            return int(value.shape[1])
    return None


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


def detect_family(state_dict: dict, name: str = "checkpoint") -> str:
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
    context = _cross_attention_width(state_dict)
    has_sd1_text = any(k.startswith(SD1_TEXT_PREFIX) for k in keys)
    has_sd2_text = any(k.startswith(SD2_TEXT_PREFIX + "transformer.resblocks.") for k in keys)
    if has_sd2_text or (context == 1024 and not has_sd1_text):
        return "sd2"
    if has_sd1_text or context == 768:
        return "sd1"
    raise CheckpointError(f"{name}: UNet found but no known text encoder (neither '{SD1_TEXT_PREFIX}*' nor "
                          f"'{SD2_TEXT_PREFIX}transformer.*'; cross-attention width {context})")


_PREDICTION_ALIASES = {"epsilon": "epsilon", "eps": "epsilon", "v_prediction": "v_prediction", "v": "v_prediction",
                       "v-prediction": "v_prediction"}


def detect_prediction_type(state_dict: dict, family: str, path: Optional[Path] = None,
                           model_type: Optional[str] = None) -> str:
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


# --------------------------------------------------------------------------- configs from shapes
def _group_count(widths: Iterable[int]) -> int:
    """GroupNorm groups: SD's 32, or the largest smaller power of two dividing every width."""
    widths = list(widths)
    for groups in (32, 16, 8, 4, 2, 1):
        if all(w % groups == 0 for w in widths):
            return groups
    return 1


def transformer_depth(unet_state: dict, block: str) -> int:
    """Transformer blocks in the SpatialTransformer at `block` (e.g. "input_blocks.4.1"), 0 if none."""
    marker = block + ".transformer_blocks."
    return len({key[len(marker):].split(".")[0] for key in unet_state if key.startswith(marker)})


def unet_levels(unet_state: dict) -> list[dict]:
    """The input side of an LDM UNet (keys without the UNet prefix), one dict per resolution level:
    "channels", "resnets" (res blocks), "attention" (any SpatialTransformer) and "depths" (the
    transformer depth after each res block, 0 where there is none)."""
    levels: list[dict] = [{"channels": None, "resnets": 0, "attention": False, "depths": []}]
    index = 1
    while f"input_blocks.{index}.0.op.weight" in unet_state or \
            f"input_blocks.{index}.0.out_layers.3.weight" in unet_state:
        if f"input_blocks.{index}.0.op.weight" in unet_state:
            levels.append({"channels": None, "resnets": 0, "attention": False, "depths": []})
        else:
            level = levels[-1]
            level["channels"] = int(unet_state[f"input_blocks.{index}.0.out_layers.3.weight"].shape[0])
            level["resnets"] += 1
            level["attention"] |= f"input_blocks.{index}.1.proj_in.weight" in unet_state
            level["depths"].append(transformer_depth(unet_state, f"input_blocks.{index}.1"))
        index += 1
    if any(level["channels"] is None for level in levels):
        raise CheckpointError("UNet input blocks have an unexpected layout")
    return levels


def unet_config_from_ldm(state_dict: dict, family: str) -> dict:
    """A diffusers UNet2DConditionModel config read off an SD1/SD2 LDM UNet's tensor shapes."""
    sd = {k[len(UNET_PREFIX):]: v for k, v in state_dict.items() if k.startswith(UNET_PREFIX)}
    in_channels = int(sd["input_blocks.0.0.weight"].shape[1])
    levels = unet_levels(sd)
    layers_per_block = levels[0]["resnets"]
    widths = [level["channels"] for level in levels]
    proj_in = next((v for k, v in sd.items() if k.endswith(".proj_in.weight")), None)
    transformer_depth = len({k.split(".transformer_blocks.")[1].split(".")[0]
                             for k in sd if k.startswith("input_blocks.1.1.transformer_blocks.")}) or 1
    cross_attention_dim = _cross_attention_width(state_dict)
    heads = [max(w // 64, 1) for w in widths] if family == "sd2" else 8
    return {
        "sample_size": 96 if family == "sd2" else 64,
        "in_channels": in_channels,
        "out_channels": int(sd["out.2.weight"].shape[0]),
        "down_block_types": tuple("CrossAttnDownBlock2D" if level["attention"] else "DownBlock2D" for level in levels),
        "up_block_types": tuple("CrossAttnUpBlock2D" if level["attention"] else "UpBlock2D"
                                for level in reversed(levels)),
        "block_out_channels": tuple(widths),
        "layers_per_block": layers_per_block,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": heads,
        "use_linear_projection": proj_in is not None and proj_in.ndim == 2,
        "transformer_layers_per_block": transformer_depth,
        "norm_num_groups": _group_count(widths),
        "upcast_attention": family == "sd2",
    }


def vae_config_from_ldm(state_dict: dict) -> dict:
    """A diffusers AutoencoderKL config read off an LDM VAE's tensor shapes."""
    sd = {k[len(VAE_PREFIX):]: v for k, v in state_dict.items() if k.startswith(VAE_PREFIX)}
    if "encoder.conv_in.weight" not in sd:
        raise CheckpointError(f"no VAE found (no '{VAE_PREFIX}encoder.conv_in.weight')")
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down.")})
    widths = [int(sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in levels]
    layers = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
    return {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
        "latent_channels": int(sd["quant_conv.weight"].shape[0]) // 2,
        "block_out_channels": tuple(widths),
        "down_block_types": ("DownEncoderBlock2D",) * len(widths),
        "up_block_types": ("UpDecoderBlock2D",) * len(widths),
        "layers_per_block": layers,
        "norm_num_groups": _group_count(widths),
        "scaling_factor": LATENT_SCALE,
    }


def _text_encoder_config(token_embedding: torch.Tensor, positions: int, layers: int, intermediate: int,
                         hidden_act: str, tokenizer: "CLIPTokenizer",
                         projection_dim: Optional[int] = None) -> "CLIPTextConfig":
    from transformers import CLIPTextConfig

    hidden = int(token_embedding.shape[1])
    return CLIPTextConfig(
        vocab_size=int(token_embedding.shape[0]), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 1), max_position_embeddings=positions,
        hidden_act=hidden_act, projection_dim=projection_dim or hidden, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


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


_OPENCLIP_LAYER_NAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                         "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


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
    config = _text_encoder_config(text_state["embeddings.token_embedding.weight"],
                                  int(text_state["embeddings.position_embedding.weight"].shape[0]), layers,
                                  int(text_state["encoder.layers.0.mlp.fc1.weight"].shape[0]),
                                  "quick_gelu" if family == "sd1" else "gelu", tokenizer)
    model = CLIPTextModel(config)
    if any(k.startswith("text_model.") for k in model.state_dict()):  # transformers 4.x nests the model
        text_state = {"text_model." + k: v for k, v in text_state.items()}
    _load_strict(model, text_state, "text encoder")
    return model


def _load_strict(module: torch.nn.Module, state: dict, what: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{what} weights do not match the detected architecture: "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    meta = [name for name, tensor in list(module.named_parameters()) + list(module.named_buffers()) if tensor.is_meta]
    if meta:
        raise CheckpointError(f"{what}: no weights for {meta[:5]}")


def _on_meta(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build a module without allocating (the checkpoint's tensors are assigned next)."""
    with torch.device("meta"):
        return factory()


# --------------------------------------------------------------------------- loaders
def _finish(components: SDComponents, device: Optional[Union[str, torch.device]],
            dtype: Optional[torch.dtype]) -> SDComponents:
    """Move to `device`; cast UNet and text encoders to `dtype` (default fp32, whatever the
    file stores: fp16 files are common) and the VAE to fp32, since SD VAEs (SDXL's above all)
    overflow in fp16; freeze everything."""
    for attribute in components.module_names():
        module = getattr(components, attribute)
        target_dtype = torch.float32 if attribute == "vae" or dtype is None else dtype
        module.to(device=device, dtype=target_dtype)
        module.eval().requires_grad_(False)
    return components


def load_single_file(path: PathLike, device: Optional[Union[str, torch.device]] = None,
                     dtype: Optional[torch.dtype] = None, model_type: Optional[str] = None,
                     tokenizer_dirs: Iterable[PathLike] = ()) -> SDComponents:
    """An SD1.x/SD2.x checkpoint in the original LDM key layout, or an SDXL base one in the
    original SGM layout (see sdxl_checkpoint.py)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    path = Path(path)
    state_dict = read_state_dict(path)
    family = detect_family(state_dict, path.name)
    prediction_type = detect_prediction_type(state_dict, family, path, model_type)
    tokenizer = find_tokenizer(family, path, tokenizer_dirs)
    if family == "sdxl":
        from .sdxl_checkpoint import load_sdxl_single_file  # it builds on this module's helpers

        return _finish(load_sdxl_single_file(path, state_dict, prediction_type, tokenizer), device, dtype)
    try:
        unet_config = unet_config_from_ldm(state_dict, family)
        if unet_config["in_channels"] != 4:
            raise CheckpointError(f"the UNet takes {unet_config['in_channels']} input channels (an inpainting or "
                                  f"depth model); only 4-channel txt2img checkpoints are supported")
        vae_config = vae_config_from_ldm(state_dict)
        unet = _on_meta(lambda: UNet2DConditionModel(**unet_config))
        _load_strict(unet, convert_ldm_unet_checkpoint(state_dict, unet_config), "UNet")
        vae = _on_meta(lambda: AutoencoderKL(**vae_config))
        _load_strict(vae, convert_ldm_vae_checkpoint(state_dict, vae_config), "VAE")
        text_encoder = _load_text_encoder(state_dict, family, tokenizer)
    except CheckpointError as error:
        raise CheckpointError(f"{path.name} (detected {family.upper()}): {error}") from None
    except (KeyError, IndexError, RuntimeError) as error:
        raise CheckpointError(f"{path.name} (detected {family.upper()}): the weights do not fit the "
                              f"{family.upper()} layout ({type(error).__name__}: {error})") from error
    alphas = state_dict.get("alphas_cumprod")
    alphas = alphas.float() if alphas is not None and alphas.shape == (1000,) else scaled_linear_alphas_cumprod()
    components = SDComponents(
        unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae, alphas_cumprod=alphas,
        prediction_type=prediction_type, family=family, name=path.name, latent_scale_factor=LATENT_SCALE,
        context_dim=int(unet_config["cross_attention_dim"]), default_clip_layer=-2 if family == "sd2" else -1,
    )
    return _finish(components, device, dtype)


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


def _scheduler_settings(folder: Path, model_type: Optional[str]) -> tuple[torch.Tensor, str]:
    """(alphas_cumprod, prediction type) from a diffusers folder's scheduler/ (defaults: SD's)."""
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    scheduler_config = json.loads(scheduler_file.read_text()) if scheduler_file.is_file() else {}
    prediction_type = detect_prediction_type({}, "sd1", None, model_type or scheduler_config.get(
        "prediction_type", "epsilon"))
    return _alphas_from_scheduler_config(scheduler_config), prediction_type


def _load_sdxl_folder(folder: Path, device: Optional[Union[str, torch.device]], dtype: Optional[torch.dtype],
                      model_type: Optional[str], tokenizer_dirs: Iterable[PathLike]) -> SDComponents:
    from .sdxl_checkpoint import load_sdxl_diffusers_folder  # it builds on this module's helpers

    alphas, prediction_type = _scheduler_settings(folder, model_type)
    tokenizer = find_tokenizer("sdxl", folder, tokenizer_dirs)
    return _finish(load_sdxl_diffusers_folder(folder, alphas, prediction_type, tokenizer), device, dtype)


def load_diffusers_folder(folder: PathLike, device: Optional[Union[str, torch.device]] = None,
                          dtype: Optional[torch.dtype] = None, model_type: Optional[str] = None,
                          tokenizer_dirs: Iterable[PathLike] = ()) -> SDComponents:
    """A diffusers pipeline folder (unet/, text_encoder/, vae/, tokenizer/, scheduler/); with
    text_encoder_2/ an SDXL base one (see sdxl_checkpoint.py)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    if (folder / "text_encoder_2").exists():
        return _load_sdxl_folder(folder, device, dtype, model_type, tokenizer_dirs)
    for part in ("unet", "text_encoder", "vae"):
        if not (folder / part / "config.json").is_file():
            raise CheckpointError(f"{folder.name}: not a diffusers SD folder: {part}/config.json is missing")
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    if unet_config.get("addition_embed_type") == "text_time":
        raise CheckpointError(f"{folder.name}: the UNet is SDXL-type (addition_embed_type text_time) but there is "
                              f"no text_encoder_2/; an SDXL folder needs both text encoders")
    context_dim = int(unet_config.get("cross_attention_dim", 768))
    family = "sd2" if context_dim == 1024 else "sd1"
    alphas, prediction_type = _scheduler_settings(folder, model_type)
    tokenizer = find_tokenizer(family, folder, tokenizer_dirs)
    with torch.inference_mode(False):
        unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
        vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae", local_files_only=True)
    components = SDComponents(
        unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
        alphas_cumprod=alphas, prediction_type=prediction_type,
        family=family, name=folder.name, latent_scale_factor=float(vae.config.get("scaling_factor", LATENT_SCALE)),
        context_dim=context_dim,
        # diffusers' SD2 text encoders already stop at OpenCLIP's penultimate layer.
        default_clip_layer=-1,
    )
    return _finish(components, device, dtype)


def load_components(path_or_name: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
                    dtype: Optional[torch.dtype] = None, model_type: Optional[str] = None,
                    tokenizer_dirs: Iterable[PathLike] = ()) -> SDComponents:
    """Load "tiny-sd (built-in)", "tiny-sdxl (built-in)", a diffusers folder, or an SD1.x/SD2.x/
    SDXL-base single file.

    `model_type` forces the prediction type ("epsilon"/"v_prediction"); `tokenizer_dirs` are
    extra folders searched for CLIP tokenizer files. Weights are created outside
    inference_mode so that training can backpropagate through them."""
    if str(path_or_name) == TINY_MODEL_NAME:
        return build_tiny_components(device=device, dtype=dtype)
    if str(path_or_name) == TINY_SDXL_MODEL_NAME:
        from .tiny_sdxl import build_tiny_sdxl_components

        return build_tiny_sdxl_components(device=device, dtype=dtype)
    path = Path(path_or_name)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    with torch.inference_mode(False):
        if path.is_dir():
            return load_diffusers_folder(path, device, dtype, model_type, tokenizer_dirs)
        return load_single_file(path, device, dtype, model_type, tokenizer_dirs)
