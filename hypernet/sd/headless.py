"""Headless MODEL / CLIP / VAE objects: the part of ComfyUI's ModelPatcher, CLIP and VAE
that our nodes and the stand-in core nodes use, built on diffusers and transformers."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from .attention import ActivePatches, active_patches, attention_input_widths, install_patchable_attention
from .components import SDComponents, TextConditioning
from .prompt_weights import parse_weighted_prompt
from .sdxl import SIZE_EMBEDDING_DIM, SIZE_VALUES, VAE_DOWNSCALE, batched, latent_time_ids

if TYPE_CHECKING:
    from diffusers.models import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from .attention import AttentionPatch

TOKENS_PER_CHUNK = 77
MAX_WORD_TOKENS = 8  # longer words may be split across chunks (ComfyUI's rule)


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
        expected = self.unet.add_embedding.linear_1.in_features - SIZE_VALUES * SIZE_EMBEDDING_DIM
        if pooled.shape[-1] != expected:
            raise ValueError(f"the pooled text embedding is {pooled.shape[-1]} wide; {self.components.name} takes "
                             f"{expected} (was the prompt encoded with another checkpoint's text encoder?)")
        if time_ids is None:
            time_ids = latent_time_ids(x_t)
        batch = x_t.shape[0]
        return {"text_embeds": batched(pooled, batch, "pooled").to(self.load_device, self.model_dtype()),
                # In fp32, as ComfyUI embeds them: sizes up to 16384 lose whole units in fp16.
                "time_ids": batched(time_ids.reshape(-1, SIZE_VALUES), batch, "time_ids").to(
                    self.load_device, torch.float32)}


class HeadlessCLIP:
    """ComfyUI-CLIP-like text encoder: tokenize, encode_from_tokens, clip_layer.

    Prompts longer than 75 tokens are split into 77-token chunks whose encodings are
    concatenated along the token axis, as ComfyUI does, and ComfyUI's emphasis syntax
    `(word)` / `(word:1.2)` is honoured. `embedding:name` (textual inversion) is not: it is
    encoded as plain text. SDXL checkpoints get the subclass in sdxl_clip.py."""

    def __init__(self, components: SDComponents, layer_idx: Optional[int] = None):
        self.components = components
        self.layer_idx = components.default_clip_layer if layer_idx is None else layer_idx

    def clone(self) -> "HeadlessCLIP":
        return type(self)(self.components, self.layer_idx)

    def clip_layer(self, layer_idx: int) -> None:
        """Read the encoder's output at `layer_idx` (-1 = last), like CLIPSetLastLayer."""
        layers = self.components.text_encoder.config.num_hidden_layers
        if not -layers <= layer_idx <= -1:
            raise ValueError(f"clip layer {layer_idx} is out of range: this text encoder has {layers} layers "
                             f"(use -1 .. -{layers})")
        self.layer_idx = layer_idx

    @property
    def tokenizer(self) -> "CLIPTokenizer":
        return self.components.tokenizer

    def _special_ids(self) -> tuple[int, int, int]:
        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return tokenizer.bos_token_id, tokenizer.eos_token_id, pad

    def _pad_chunk(self, body: list[tuple[int, float]], pad: Optional[int] = None) -> tuple[list[int], list[float]]:
        """start + up to 75 (id, weight) tokens + end, padded to 77 (with `pad`, else the tokenizer's pad)."""
        bos, eos, own_pad = self._special_ids()
        pad = own_pad if pad is None else pad
        padding = TOKENS_PER_CHUNK - 2 - len(body)
        return ([bos] + [i for i, _ in body] + [eos] + [pad] * padding,
                [1.0] + [w for _, w in body] + [1.0] + [1.0] * padding)

    @staticmethod
    def _chunk_bodies(words: list[list[tuple[int, float]]]) -> list[list[tuple[int, float]]]:
        """Pack words into 75-token chunk bodies as ComfyUI does: a word that does not fit starts
        the next chunk, unless it is longer than MAX_WORD_TOKENS, in which case it is split."""
        body_size = TOKENS_PER_CHUNK - 2
        bodies: list[list[tuple[int, float]]] = [[]]
        for word in words:
            while word:
                room = body_size - len(bodies[-1])
                if len(word) <= room:
                    bodies[-1] += word
                    word = []
                elif len(word) > MAX_WORD_TOKENS:
                    bodies[-1] += word[:room]
                    word = word[room:]
                    bodies.append([])
                else:
                    bodies.append([])
        if len(bodies) > 1 and not bodies[-1]:
            bodies.pop()
        return bodies

    def _padded_tokens(self, bodies: list[list[tuple[int, float]]], pad: Optional[int] = None) -> dict:
        """{"input_ids": LongTensor [chunks, 77], "weights": FloatTensor [chunks, 77]} for chunk bodies."""
        padded = [self._pad_chunk(body, pad) for body in bodies]
        return {"input_ids": torch.tensor([ids for ids, _ in padded], dtype=torch.long),
                "weights": torch.tensor([weights for _, weights in padded], dtype=torch.float32)}

    def _token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def _weighted_words(self, text: str) -> list[list[tuple[int, float]]]:
        """Each whitespace-separated word's (token id, emphasis weight) pairs."""
        words = []
        for segment, weight in parse_weighted_prompt(text):
            for word in segment.replace("\n", " ").split(" "):
                if word:
                    words.append([(token, weight) for token in self._token_ids(word)])
        return words

    def tokenize(self, text: str) -> dict:
        """Token ids {"input_ids": LongTensor [chunks, 77], "weights": FloatTensor [chunks, 77]},
        with ComfyUI's `(text)` / `(text:1.2)` emphasis turned into per-token weights."""
        return self._padded_tokens(self._chunk_bodies(self._weighted_words(text)))

    def _encode_ids(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states at the chosen layer [N,77,D] (final layer norm applied, as ComfyUI
        does for SD1/SD2) and the pooled output at each end-of-text token [N,D]."""
        encoder = self.components.text_encoder
        device = next(encoder.parameters()).device
        input_ids = input_ids.to(device)
        output = encoder(input_ids=input_ids, output_hidden_states=True)
        hidden = output.hidden_states[self.layer_idx]
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm  # transformers 5 flattened it
        hidden = output.last_hidden_state if self.layer_idx == -1 else final_norm(hidden)
        return hidden.float(), output.pooler_output.float()

    def encode_from_tokens(self, tokens: dict,
                           return_pooled: bool = False) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Conditioning [1, 77*chunks, D] (and the first chunk's pooled output [1, D]).

        Weighted tokens move away from the empty prompt's embedding at the same position:
        z = z_empty + (z - z_empty) * weight."""
        input_ids = tokens["input_ids"]
        weights = tokens.get("weights")
        weighted = weights is not None and bool((weights != 1.0).any())
        if weighted:
            empty = torch.tensor([self._pad_chunk([])[0]], dtype=torch.long)
            cond, pooled = self._encode_ids(torch.cat([input_ids, empty]))
            cond, empty_cond, pooled = cond[:-1], cond[-1:], pooled[:-1]
            weights = weights.to(cond.device, cond.dtype).unsqueeze(-1)
            cond = empty_cond + (cond - empty_cond) * weights
        else:
            cond, pooled = self._encode_ids(input_ids)
        cond = cond.reshape(1, -1, cond.shape[-1])
        return (cond, pooled[:1]) if return_pooled else cond

    def _training_chunks(self, texts: list[str], pad: Optional[int] = None) -> torch.Tensor:
        """One 77-token chunk per text, longer texts truncated: LongTensor [B, 77]."""
        return torch.tensor([self._pad_chunk([(t, 1.0) for t in self._token_ids(text)][:TOKENS_PER_CHUNK - 2],
                                             pad)[0] for text in texts], dtype=torch.long)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """One 77-token chunk per text (longer texts are truncated): [B, 77, D], for training."""
        cond, _ = self._encode_ids(self._training_chunks(texts))
        return cond

    def encode_conditioning(self, texts: list[str]) -> TextConditioning:
        """What training feeds the UNet for `texts`, one chunk each: the context [B, 77, D], and
        on SDXL also the pooled output [B, 1280]; SD1/SD2 have none (pooled is None)."""
        return TextConditioning(self.encode_texts(texts))


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
    from .sdxl_clip import HeadlessSDXLCLIP  # it extends HeadlessCLIP, so it imports this module

    clip = HeadlessSDXLCLIP(components) if components.is_sdxl else HeadlessCLIP(components)
    return HeadlessModel(components), clip, HeadlessVAE(components)
