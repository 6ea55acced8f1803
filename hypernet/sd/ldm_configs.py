"""diffusers configs read off the tensor shapes of an LDM-layout UNet and VAE (widths, depths,
attention levels, linear vs conv projections), so that no config file is needed beside a
single-file checkpoint. SDXL's UNet config, which also needs per-block depths and the added
conditioning, is built from these pieces in sdxl_checkpoint.py.
"""
from __future__ import annotations

from typing import Iterable

from .components import CheckpointError
from .ldm_layout import LATENT_SCALE, UNET_PREFIX, VAE_PREFIX, cross_attention_width


def group_count(widths: Iterable[int]) -> int:
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
    depth = len({k.split(".transformer_blocks.")[1].split(".")[0]
                 for k in sd if k.startswith("input_blocks.1.1.transformer_blocks.")}) or 1
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
        "cross_attention_dim": cross_attention_width(state_dict),
        "attention_head_dim": heads,
        "use_linear_projection": proj_in is not None and proj_in.ndim == 2,
        "transformer_layers_per_block": depth,
        "norm_num_groups": group_count(widths),
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
        "norm_num_groups": group_count(widths),
        "scaling_factor": LATENT_SCALE,
    }
