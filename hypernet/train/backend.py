"""The small protocol the one training loop runs against, and the noise schedule it needs.

Two adapters implement it: backend_diffusers.py (our headless MODEL/CLIP/VAE) and
backend_comfy.py (ComfyUI's ModelPatcher/CLIP/VAE, duck-typed). Latents crossing this
boundary are always *scaled* (the UNet's latent space)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol, Union

import torch

from ..sd.components import Conditioning


@dataclass(frozen=True)
class NoiseSchedule:
    """The model's DDPM table and what its UNet predicts."""

    alphas_cumprod: torch.Tensor  # [T] fp32, CPU
    prediction_type: str  # "epsilon" | "v_prediction"

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])


class TrainingBackend(Protocol):
    """What the loop needs from a model family: predict, encode images and text, schedule."""

    device: torch.device

    def schedule(self) -> NoiseSchedule:
        """alphas_cumprod and prediction type of the model."""

    def attention_widths(self) -> list[int]:
        """Widths a new hypernetwork needs modules for."""

    def checkpoint_name(self) -> Optional[str]:
        """The checkpoint's name for the file's `sd_checkpoint_name`, or None if unknown."""

    def compute_dtype(self) -> torch.dtype:
        """The dtype the UNet computes in without autocast: its weights' dtype, or the dtype a
        manual cast computes fp8/fp16-stored weights in (ComfyUI's manual_cast_dtype)."""

    def attach(self, hypernetwork: Any) -> None:
        """Attach `hypernetwork` (strength 1) so that predict() runs through it."""

    def predict(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """UNet output (eps or v) for scaled latents x_t at integer DDPM timesteps, conditioned on
        a text context or (SDXL) a TextConditioning (see conditioning.py)."""

    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Pixels [B,H,W,3] 0..1 -> scaled latent mean and std (std None if unknown)."""

    def encode_texts(self, prompts: list[str]) -> Union[Conditioning, list[Conditioning]]:
        """Prompts -> contexts [B,T,D] (or a list of [T,D] when lengths differ); for SDXL with
        the pooled outputs, as TextConditioning."""

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels [B,H,W,3] 0..1 on the CPU, decoded on the training device
        (an offloaded VAE comes to it for the decode)."""

    def offload_encoders(self) -> None:
        """Move VAE and CLIP off the training device (caching is done), until the session ends."""

    def session(self, gradient_checkpointing: bool) -> contextlib.AbstractContextManager:
        """Context for the whole run: model on the device, UNet frozen, checkpointing set."""


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Turn off gradients for `module`'s weights for the block, restoring the flags after:
    the UNet is shared with the rest of the graph and must come back as it was."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


@contextlib.contextmanager
def checkpointed(blocks: list[torch.nn.Module], around: Optional[Callable[[], Any]] = None) -> Iterator[None]:
    """Run each of `blocks` under activation checkpointing for the duration of the block.

    The override is an instance attribute removed afterwards, so the shared model is left
    exactly as it was. `around()`, if given, returns a context manager entered both in the
    forward pass and in the recomputation during backward (state that lives in context
    variables rather than arguments, such as the headless model's active patches).

    Keyword arguments reach torch's checkpoint as positional ones: it saves the RNG state of a GPU
    only for the devices of its positional tensor arguments, and diffusers calls its blocks with
    keywords, so on a GPU the recomputation would draw other dropout masks than the forward.

    A dict argument (ComfyUI's transformer_options) is the caller's, and the caller changes it
    between layers (transformer_index, block, block_index): the forward gets the caller's dict, as
    without checkpointing, and each recomputation a fresh shallow copy of it as it was at the call,
    so a patch that reads it sees in backward what it saw in forward."""
    from torch.utils.checkpoint import checkpoint

    def wrap(block: torch.nn.Module) -> Callable[..., Any]:
        original = block.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return original(*args, **kwargs)
            names, count = tuple(kwargs), len(args)
            at_call = {i: dict(value) for i, value in enumerate((*args, *kwargs.values())) if isinstance(value, dict)}
            calls: list[None] = []

            def run(*inner: Any) -> Any:
                if calls:  # a recomputation: the dicts as they were when the forward ran
                    inner = tuple(dict(at_call[i]) if i in at_call else value for i, value in enumerate(inner))
                calls.append(None)
                with (around() if around is not None else contextlib.nullcontext()):
                    return original(*inner[:count], **dict(zip(names, inner[count:])))

            return checkpoint(run, *args, *kwargs.values(), use_reentrant=False)

        return forward

    wrapped = []
    try:
        for block in blocks:
            if "forward" not in block.__dict__:
                block.forward = wrap(block)
                wrapped.append(block)
        yield
    finally:
        for block in wrapped:
            del block.forward
