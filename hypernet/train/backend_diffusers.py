"""TrainingBackend over our headless MODEL/CLIP/VAE (hypernet/models/headless.py)."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator, Optional

import torch

from ..network import Hypernetwork
from ..sd.attention import ActivePatches, active_patches
from ..training_patch import ContextMemoPatch, patched_for_training
from .backend import NoiseSchedule, checkpointed, frozen
from .conditioning import Conditioning, split
from .encoding_cache import identity_text, weights_digest

if TYPE_CHECKING:
    from ..sd.headless import HeadlessModel, HeadlessVAE
    from ..sd.headless_clip import HeadlessCLIP


class DiffusersBackend:
    """Trains through a clone of a HeadlessModel; the caller's model is never patched."""

    def __init__(self, model: "HeadlessModel", clip: "HeadlessCLIP", vae: "HeadlessVAE",
                 device: Optional[torch.device] = None):
        self.base_model, self.model, self.clip, self.vae = model, model.clone(), clip, vae
        self.memo: Optional[ContextMemoPatch] = None  # set by attach()
        self.offloaded: list[tuple[torch.nn.Module, torch.device]] = []
        self.in_session = False
        self.fp16_weights: list[tuple[torch.nn.Parameter, torch.Tensor]] = []  # (parameter, its fp16 data on the CPU)
        self.components = model.components
        self.device = torch.device(device) if device is not None else model.load_device

    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.base_model.alphas_cumprod.float().cpu(), self.base_model.prediction_type)

    def attention_widths(self) -> list[int]:
        return list(self.base_model.attention_widths())

    def checkpoint_name(self) -> Optional[str]:
        return self.components.name or None

    def compute_dtype(self) -> torch.dtype:
        """The UNet's weights' dtype: apply_model casts its inputs to it (fp16 on CUDA by default)."""
        return self.model.model_dtype()

    def attach(self, hypernetwork: Hypernetwork) -> None:
        self.model, self.memo = patched_for_training(self.base_model, hypernetwork)

    def predict(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """SDXL's size values are left to apply_model: the latent's own size, no crop."""
        self._store_for_autocast()
        context, pooled = split(cond)
        context = context.to(self.model.load_device, self.model.model_dtype())  # as apply_model would
        if self.memo is not None:
            self.memo.prime(context)
        return self.model.apply_model(x_t, timesteps, context, pooled=pooled)

    def _store_for_autocast(self) -> None:
        """bf16 autocast over fp16-stored weights (ComfyUI's and the headless loader's default on
        CUDA) re-casts every frozen weight at every op, and keeps the copies for backward: autocast
        caches casts only of fp32 weights that require gradients. So for the session the UNet is stored
        in bf16, which rounds each weight as autocast's cast would, and the fp16 weights wait on the
        CPU to come back bit for bit when the session ends (docs/training.md, Precision)."""
        device_type = self.device.type
        if not self.in_session or self.fp16_weights or not torch.amp.is_autocast_available(device_type):
            return  # the meta device of the placement tests has no autocast
        if not torch.is_autocast_enabled(device_type) or torch.get_autocast_dtype(device_type) is not torch.bfloat16:
            return
        for parameter in self.components.unet.parameters():
            if parameter.dtype is torch.float16:
                self.fp16_weights.append((parameter, parameter.data.to("cpu", copy=True)))
                parameter.data = parameter.data.to(torch.bfloat16)

    def _restore_fp16_weights(self) -> None:
        while self.fp16_weights:
            parameter, stored = self.fp16_weights.pop()
            parameter.data = stored.to(parameter.device)

    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vae = self.components.vae
        parameter = next(vae.parameters())
        x = pixels[..., :3].movedim(-1, 1).to(parameter.device, parameter.dtype) * 2.0 - 1.0
        distribution = vae.encode(x).latent_dist
        scale = float(self.components.latent_scale_factor)
        return distribution.mean.float() * scale, distribution.std.float() * scale

    def vae_identity(self) -> str:
        """What makes this VAE's latents, for the persistent cache: its weights, the latent scale,
        and that it gives the distribution (mean and std)."""
        return identity_text("headless", "distribution", weights_digest(self.components.vae),
                             float(self.components.latent_scale_factor))

    def clip_identity(self) -> str:
        """What makes this CLIP's conditionings, for the persistent cache: its encoders' weights,
        the layer read (clip skip), and whether the pooled output comes with them (SDXL)."""
        components = self.components
        encoders = [e for e in (components.text_encoder, getattr(components, "text_encoder_2", None)) if e is not None]
        return identity_text("headless", type(self.clip).__name__, getattr(self.clip, "layer_idx", None),
                             self.base_model.uses_added_conditioning, *(weights_digest(e) for e in encoders))

    def encode_texts(self, prompts: list[str]) -> Conditioning:
        """The contexts; for SDXL with the pooled outputs (TextConditioning)."""
        if self.base_model.uses_added_conditioning:
            return self.clip.encode_conditioning(list(prompts))
        return self.clip.encode_texts(list(prompts))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Decodes on the training device. offload_encoders leaves the VAE on the CPU, where a
        preview's decode would take seconds while the GPU (and, distributed, every other rank)
        waits: the VAE comes to the device for the decode and goes back after, so the memory it
        takes there is the decode's only (docs/training.md, where tensors live)."""
        vae = self.components.vae
        home = next(vae.parameters()).device
        if home != self.device:
            vae.to(self.device)
        try:
            with torch.no_grad():
                return self.vae.decode(latents / float(self.components.latent_scale_factor))
        finally:
            if home != self.device:
                vae.to(home)

    def offload_encoders(self) -> None:
        if self.device.type != "cpu":
            components = self.components
            for module in (components.text_encoder, getattr(components, "text_encoder_2", None), components.vae):
                if module is not None:
                    self.offloaded.append((module, next(module.parameters()).device))
                    module.to("cpu")

    def _restore_encoders(self) -> None:
        """Put VAE and CLIP back where they were: the rest of the graph (sampling after training) uses them."""
        while self.offloaded:
            module, device = self.offloaded.pop()
            module.to(device)

    def _active_patches(self) -> contextlib.AbstractContextManager:
        """The patches apply_model activates, re-entered when checkpointed blocks recompute."""
        options = self.model.model_options.get("transformer_options", {})
        patches = ActivePatches(tuple(self.model.patches("attn1_patch")), tuple(self.model.patches("attn2_patch")),
                                {key: value for key, value in options.items() if key != "patches"})
        return active_patches(patches)

    @contextlib.contextmanager
    def session(self, gradient_checkpointing: bool) -> Iterator[None]:
        unet = self.components.unet
        blocks = list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks) if gradient_checkpointing else []
        if self.memo is not None:
            self.memo.lazy = not gradient_checkpointing
        self.in_session = True
        try:
            with frozen(unet), checkpointed([b for b in blocks if b is not None], self._active_patches):
                yield
        finally:
            self.in_session = False
            self._restore_fp16_weights()
            self._restore_encoders()
