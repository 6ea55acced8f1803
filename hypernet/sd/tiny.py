"""The built-in "tiny-sd (built-in)" checkpoint: SD architecture, random weights.

It exists so that every workflow and test runs on a CPU in seconds. Its weights are
random (from a fixed seed), so its pictures are noise: it is for pipelines and tests,
not for pictures. Everything is built in code -- the UNet, the CLIP text encoder, the
VAE and a byte-level CLIP tokenizer -- nothing is downloaded or read from disk.
"""
from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING, Callable, Optional, Union

import torch

from .components import SDComponents, scaled_linear_alphas_cumprod
from .tokenizer import bytes_to_unicode

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

TINY_MODEL_NAME = "tiny-sd (built-in)"
# Its builder is tiny_sdxl.py; the name lives here so that every built-in name is in one place.
TINY_SDXL_MODEL_NAME = "tiny-sdxl (built-in)"
TINY_CONTEXT_DIM = 48  # distinct from the self-attention widths, so cross-attention gets its own module
TINY_LATENT_SCALE = 0.18215

_cache: dict[tuple, SDComponents] = {}
_cache_lock = threading.Lock()


def build_tiny_tokenizer(pad_token: str = "<|endoftext|>") -> "CLIPTokenizer":
    """A CLIPTokenizer whose vocabulary is the 256 byte symbols (plain and word-final) plus
    a few merges of common letter pairs, and CLIP's start/end tokens. Like CLIP's vocabulary it
    numbers "!" 0, so pad_token="!" pads with id 0 as OpenCLIP does."""
    from transformers import CLIPTokenizer

    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    merges = []
    for first, second in ("th", "he", "in", "er", "an", "re", "on", "at", "en", "nd"):
        merges.append((first, second))
        vocab.setdefault(first + second, len(vocab))
    for pair in ("he", "in", "er", "an", "re", "on", "at", "en", "nd"):
        merges.append((pair[0], pair[1] + "</w>"))
        vocab.setdefault(pair + "</w>", len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(
        vocab=vocab, pad_token=pad_token,
        merges=merges,  # type: ignore[arg-type]  # transformers annotates list[str]; its BPE takes pairs
    )
    tokenizer.model_max_length = 77
    return tokenizer


def build_tiny_vae(scaling_factor: float) -> torch.nn.Module:
    """A 4-level AutoencoderKL (8x downscale, 4 latent channels, like SD's) a few channels wide,
    initialised from torch's global RNG (callers seed it)."""
    from diffusers.models import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=scaling_factor, sample_size=64,
    )


def _build(seed: int) -> SDComponents:
    from diffusers.models import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    # Weights made under inference_mode could never take part in a backward pass (training).
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TINY_CONTEXT_DIM, attention_head_dim=4, norm_num_groups=8,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=TINY_CONTEXT_DIM, intermediate_size=96,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
            projection_dim=TINY_CONTEXT_DIM, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ))
        vae = build_tiny_vae(TINY_LATENT_SCALE)
    for module in (unet, text_encoder, vae):
        module.eval().requires_grad_(False)
    return SDComponents(
        unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
        alphas_cumprod=scaled_linear_alphas_cumprod(), prediction_type="epsilon", family="tiny",
        name=TINY_MODEL_NAME, latent_scale_factor=TINY_LATENT_SCALE, context_dim=TINY_CONTEXT_DIM,
    )


def cached_components(cache_key: tuple, build: Callable[[], SDComponents],
                      device: Optional[Union[str, torch.device]], dtype: Optional[torch.dtype]) -> SDComponents:
    """The components `build()` makes, built once per process and key; another device or dtype
    gets a moved copy and leaves the cached CPU/fp32 one untouched."""
    with _cache_lock:
        if cache_key not in _cache:
            _cache[cache_key] = build()
        components = _cache[cache_key]
    same_device = device is None or torch.device(device) == torch.device("cpu")
    if same_device and dtype in (None, torch.float32):
        return components
    moved = copy.copy(components)
    for attribute in components.module_names():
        with torch.inference_mode(False):
            module = copy.deepcopy(getattr(components, attribute)).to(device=device, dtype=dtype)
        setattr(moved, attribute, module)
    return moved


def build_tiny_components(seed: int = 0, device: Optional[Union[str, torch.device]] = None,
                          dtype: Optional[torch.dtype] = None) -> SDComponents:
    """The built-in tiny checkpoint, bit-identical for a given seed.

    Built once per process and seed (about a second); later calls return the cached
    components, shared like a checkpoint ComfyUI has loaded. Asking for another device or
    dtype returns a moved copy and leaves the cached CPU/fp32 one untouched."""
    return cached_components((TINY_MODEL_NAME, seed), lambda: _build(seed), device, dtype)
