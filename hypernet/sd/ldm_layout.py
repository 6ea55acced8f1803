"""The original Stable Diffusion single-file layout (LDM for SD1.x/SD2.x, SGM for SDXL) and the
helpers every family's loader shares.

Single files are `.safetensors`/`.sft`, or `.ckpt`/`.pt`/`.pth`/`.bin` read with
`torch.load(weights_only=True)`, a top-level "state_dict" unwrapped. Each part of the model
lives under its own key prefix (below). A loader builds each module on the meta device from a
config read off the tensor shapes (see ldm_configs.py), then assigns the file's renamed tensors
with load_strict, which refuses a missing or unexpected key.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

import torch

from ..safe_load import PathLike, UnreadableFile, load_safetensors, load_torch_weights
from .components import CheckpointError, scaled_linear_alphas_cumprod

if TYPE_CHECKING:
    from transformers import CLIPTextConfig, CLIPTokenizer

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
V_PREDICTION_PROBE = UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
LATENT_SCALE = 0.18215  # SD1/SD2's VAE latent scale (SDXL's is sdxl.SDXL_LATENT_SCALE)


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


def cross_attention_width(state_dict: dict) -> Optional[int]:
    """The UNet's text-context width (its first cross-attention key input), None without one."""
    for key, value in state_dict.items():
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            return int(value.shape[1])
    return None


def checkpoint_alphas_cumprod(state_dict: dict) -> torch.Tensor:
    """The file's own 1000-step `alphas_cumprod` table when it has one, else SD's default."""
    alphas = state_dict.get("alphas_cumprod")
    return alphas.float() if alphas is not None and alphas.shape == (1000,) else scaled_linear_alphas_cumprod()


def text_encoder_config(token_embedding: torch.Tensor, positions: int, layers: int, intermediate: int,
                        hidden_act: str, tokenizer: "CLIPTokenizer",
                        projection_dim: Optional[int] = None) -> "CLIPTextConfig":
    """A transformers CLIP text config for the given sizes (64-channel heads), with `tokenizer`'s
    special token ids."""
    from transformers import CLIPTextConfig

    hidden = int(token_embedding.shape[1])
    return CLIPTextConfig(
        vocab_size=int(token_embedding.shape[0]), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=max(hidden // 64, 1), max_position_embeddings=positions,
        hidden_act=hidden_act, projection_dim=projection_dim or hidden, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def load_strict(module: torch.nn.Module, state: dict, what: str) -> None:
    """Assign `state` to `module`'s tensors; CheckpointError when a key is missing or unexpected
    (position ids aside) or a tensor is left on the meta device."""
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{what} weights do not match the detected architecture: "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    meta = [name for name, tensor in list(module.named_parameters()) + list(module.named_buffers()) if tensor.is_meta]
    if meta:
        raise CheckpointError(f"{what}: no weights for {meta[:5]}")


ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def on_meta(factory: Callable[[], ModuleT]) -> ModuleT:
    """Build a module without allocating (the checkpoint's tensors are assigned next)."""
    with torch.device("meta"):
        return factory()
