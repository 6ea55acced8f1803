"""Headless MODEL and VAE objects: the part of ComfyUI's ModelPatcher and VAE that our nodes and
the stand-in core nodes use, built on diffusers; and headless_objects, which pairs them with the
checkpoint's CLIP object (headless_clip.py, sdxl_clip.py) as a checkpoint loader returns them."""
from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import torch

from .attention import ActivePatches, active_patches, attention_input_widths, install_patchable_attention
from .components import SDComponents
from .headless_clip import HeadlessCLIP
from .sdxl import SIZE_EMBEDDING_DIM, SIZE_VALUES, VAE_DOWNSCALE, batched, latent_time_ids
from .sdxl_clip import HeadlessSDXLCLIP

if TYPE_CHECKING:
    from diffusers.models import AutoencoderKL, UNet2DConditionModel

    from .attention import AttentionPatch


def _copy_model_options(options: dict) -> dict:
    """Copy the nested dicts and lists of `model_options` but share the patch objects,
    as ModelPatcher.clone() does (patches themselves are never mutated)."""
    def _copy(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: _copy(item) for key, item in value.items()}
        if isinstance(value, list):
            return [_copy(item) for item in value]
        return value
    return _copy(options)


class HeadlessModel:
    """ComfyUI-ModelPatcher-like wrapper around a diffusers UNet.

    Clones share the UNet weights and copy `model_options`, where patches live under
    `["transformer_options"]["patches"]["attn1_patch" | "attn2_patch"]` like in ComfyUI."""

    def __init__(self, components: SDComponents, model_options: Optional[dict] = None):
        self.components = components
        install_patchable_attention(components.unet)
        self.model_options = model_options if model_options is not None else {"transformer_options": {}}

    # ---------------------------------------------------------------- ModelPatcher surface
    def clone(self) -> "HeadlessModel":
        """A new patcher sharing the weights, with its own copy of the patch lists."""
        return HeadlessModel(self.components, _copy_model_options(self.model_options))

    def _patch_list(self, name: str) -> list:
        transformer_options = self.model_options.setdefault("transformer_options", {})
        return transformer_options.setdefault("patches", {}).setdefault(name, [])

    def set_model_attn1_patch(self, patch: "AttentionPatch") -> None:
        """Append a self-attention patch `(q, k, v, extra_options) -> (q, k, v)`."""
        self._patch_list("attn1_patch").append(patch)

    def set_model_attn2_patch(self, patch: "AttentionPatch") -> None:
        """Append a cross-attention patch `(q, k, v, extra_options) -> (q, k, v)`."""
        self._patch_list("attn2_patch").append(patch)

    def model_patches_to(self, device_or_dtype: Union[torch.device, torch.dtype, str]) -> None:
        """Move (or cast) every patch that has a `.to` method."""
        patches = self.model_options.get("transformer_options", {}).get("patches", {})
        for patch_list in patches.values():
            for patch in patch_list:
                if hasattr(patch, "to"):
                    patch.to(device_or_dtype)

    def model_dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def load_device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # ---------------------------------------------------------------- model facts
    @property
    def unet(self) -> "UNet2DConditionModel":
        return self.components.unet

    @property
    def prediction_type(self) -> str:
        return self.components.prediction_type

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.components.alphas_cumprod

    @property
    def latent_scale_factor(self) -> float:
        return self.components.latent_scale_factor

    @property
    def family(self) -> str:
        return self.components.family

    def attention_widths(self) -> list[int]:
        """Sorted distinct k/v input widths seen by attention (e.g. SD1: [320, 640, 768, 1280])."""
        return attention_input_widths(self.unet)

    def patches(self, name: str) -> list:
        """The current patch list `name` ("attn1_patch" or "attn2_patch")."""
        return list(self.model_options.get("transformer_options", {}).get("patches", {}).get(name, []))

    # ---------------------------------------------------------------- running
    def patch_context(self) -> contextlib.AbstractContextManager[None]:
        """A context manager that makes this object's patches the active ones (apply_model
        enters it; re-enter it when a checkpointed block recomputes during backward)."""
        transformer_options = {key: value for key, value in self.model_options.get("transformer_options", {}).items()
                               if key != "patches"}
        return active_patches(ActivePatches(tuple(self.patches("attn1_patch")), tuple(self.patches("attn2_patch")),
                                            transformer_options))

    @property
    def uses_added_conditioning(self) -> bool:
        """True for SDXL: apply_model also needs the pooled text embedding and the size values."""
        return self.components.is_sdxl

    def apply_model(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                    pooled: Optional[torch.Tensor] = None, time_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """UNet output (eps or v, per `prediction_type`) for scaled latents `x_t` at DDPM
        `timesteps` (0..999, may be fractional) with text `context`, this object's patches
        active. Gradients flow when called outside no_grad/inference_mode.

        SDXL models also take `pooled` [1 or B, 1280] (OpenCLIP-G's projected pooled output)
        and `time_ids` [6] or [1 or B, 6] (see sdxl.size_time_ids; default: the latent's own
        size times 8, no crop, as ComfyUI's KSampler fills them), which diffusers embeds and adds
        to the timestep embedding (added_cond_kwargs). Other models ignore both, as ComfyUI's
        SD1/SD2 models ignore a conditioning's pooled output."""
        device, dtype = self.load_device, self.model_dtype()
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor(timesteps)
        timesteps = timesteps.to(device=device, dtype=torch.float32).reshape(-1)
        if timesteps.numel() == 1 and x_t.shape[0] > 1:
            timesteps = timesteps.expand(x_t.shape[0])
        added = self._added_conditioning(x_t, pooled, time_ids) if self.uses_added_conditioning else None
        with self.patch_context():
            out = self.unet(x_t.to(device, dtype), timesteps, encoder_hidden_states=context.to(device, dtype),
                            added_cond_kwargs=added, return_dict=False)[0]
        return out.to(x_t.device, x_t.dtype)

    def _added_conditioning(self, x_t: torch.Tensor, pooled: Optional[torch.Tensor],
                            time_ids: Optional[torch.Tensor]) -> dict:
        """diffusers' text_time inputs: the pooled embedding and the six size values, batched."""
        if pooled is None:
            raise ValueError(f"{self.components.name} is an SDXL model: apply_model needs `pooled` (the text "
                             f"encoder's pooled output, [B, 1280]) besides the context")
        # diffusers types add_embedding as its first possible class; text_time's has a Linear input layer.
        added_input = cast(torch.nn.Linear, self.unet.add_embedding.linear_1)
        expected = added_input.in_features - SIZE_VALUES * SIZE_EMBEDDING_DIM
        if pooled.shape[-1] != expected:
            raise ValueError(f"the pooled text embedding is {pooled.shape[-1]} wide; {self.components.name} takes "
                             f"{expected} (was the prompt encoded with another checkpoint's text encoder?)")
        if time_ids is None:
            time_ids = _latent_time_ids_on(tuple(x_t.shape[-2:]), self.load_device)
        batch = x_t.shape[0]
        return {"text_embeds": batched(pooled, batch, "pooled").to(self.load_device, self.model_dtype()),
                # In fp32, as ComfyUI embeds them: sizes up to 16384 lose whole units in fp16.
                "time_ids": batched(time_ids.reshape(-1, SIZE_VALUES), batch, "time_ids").to(
                    self.load_device, torch.float32)}


@functools.lru_cache(maxsize=64)
def _latent_time_ids_on(latent_hw: tuple[int, int], device: torch.device) -> torch.Tensor:
    """latent_time_ids() for a latent of `latent_hw`, built once per size and device: built per
    UNet call, the CPU tensor's copy to a GPU would make the host wait every micro-batch."""
    with torch.inference_mode(False):  # a sampling call may come first; training reuses it
        return latent_time_ids(torch.empty(1, 4, *latent_hw, device="meta")).to(device)


class HeadlessVAE:
    """ComfyUI-VAE-like: pixels BHWC 0..1 <-> raw (unscaled) latents, as in ComfyUI's LATENT."""

    downscale_factor = VAE_DOWNSCALE

    def __init__(self, components: SDComponents):
        self.components = components

    @property
    def vae(self) -> "AutoencoderKL":
        return self.components.vae

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        parameter = next(self.vae.parameters())
        return parameter.device, parameter.dtype

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,H,W,3] in 0..1 -> the latent distribution's mean [B,4,H/8,W/8] (deterministic).
        H and W are cropped down to multiples of 8, as ComfyUI's VAEEncode does."""
        height = pixels.shape[1] // self.downscale_factor * self.downscale_factor
        width = pixels.shape[2] // self.downscale_factor * self.downscale_factor
        if height == 0 or width == 0:
            raise ValueError(f"image {tuple(pixels.shape)} is smaller than {self.downscale_factor} pixels")
        y0 = (pixels.shape[1] - height) // 2
        x0 = (pixels.shape[2] - width) // 2
        pixels = pixels[:, y0:y0 + height, x0:x0 + width, :3]
        device, dtype = self._device_dtype()
        x = pixels.movedim(-1, 1).to(device, dtype) * 2.0 - 1.0
        return self.vae.encode(x).latent_dist.mean.float().cpu()

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw latent [B,4,h,w] -> pixels [B,8h,8w,3] in 0..1 (float32, CPU)."""
        device, dtype = self._device_dtype()
        image = self.vae.decode(latent.to(device, dtype)).sample
        return ((image.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu()


def headless_objects(components: SDComponents) -> tuple[HeadlessModel, HeadlessCLIP, HeadlessVAE]:
    """MODEL, CLIP and VAE for one checkpoint, as CheckpointLoaderSimple returns them (an SDXL
    checkpoint's CLIP is a HeadlessSDXLCLIP, with both text encoders)."""
    clip = HeadlessSDXLCLIP(components) if components.is_sdxl else HeadlessCLIP(components)
    return HeadlessModel(components), clip, HeadlessVAE(components)
