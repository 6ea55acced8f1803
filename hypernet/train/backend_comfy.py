"""TrainingBackend over ComfyUI's MODEL (ModelPatcher), CLIP and VAE, by duck typing.

Nothing here imports ComfyUI. What ComfyUI's objects give us (docs/patch-contract.md):
- `model.clone()`, `set_model_attn1_patch`/`set_model_attn2_patch` appending to
  `model_options["transformer_options"]["patches"]`, `model_patches_to(device)`;
- the UNet at `model.model.diffusion_model`, called as `(x, timesteps, context=...,
  transformer_options=...)`, whose transformer blocks run the patches;
- `model.get_model_object("model_sampling")` (or `model.model.model_sampling`) with
  `sigmas` for the 1000 DDPM steps (alphas_cumprod = 1 / (1 + sigma²)) and a class that is,
  or derives from, EPS or V_PREDICTION;
- `model.model.process_latent_in/out` for the latent scale;
- CLIP `tokenize` + `encode_from_tokens`, VAE `encode(BHWC)` / `decode`.
We call the diffusion model directly at the integer DDPM timestep rather than
`apply_model`, which returns the denoised image and would need dividing by sigma again.
Loading the model onto the GPU needs ComfyUI's model management, so the node passes it in
as `load_model` (the host's load_model_for_training)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch

from ..errors import InputError
from ..network import Hypernetwork
from ..patch import model_attention_widths
from ..training_patch import patched_for_training
from .backend import NoiseSchedule, checkpointed, frozen


def _class_names(obj: object) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def _replace_inference_tensors(module: torch.nn.Module) -> int:
    """Swap weights created under torch.inference_mode() for ordinary copies.

    ComfyUI runs the whole prompt, the checkpoint loader included, under inference_mode, so
    the UNet's weights are "inference tensors". Autograd cannot save those for backward (the
    hypernet's gradient flows through every UNet layer after the first attention), and at
    fp32 on the CPU no cast produces a fresh copy in the forward pass. The copies hold the
    same values, so the model is unchanged for every other node. Returns how many were swapped."""
    swapped = 0
    with torch.inference_mode(False):
        for submodule in module.modules():
            for name, parameter in list(submodule._parameters.items()):
                if parameter is not None and parameter.is_inference():
                    submodule._parameters[name] = torch.nn.Parameter(parameter.clone(),
                                                                     requires_grad=parameter.requires_grad)
                    swapped += 1
            for name, buffer in list(submodule._buffers.items()):
                if buffer is not None and buffer.is_inference():
                    submodule._buffers[name] = buffer.clone()
                    swapped += 1
    return swapped


class ComfyBackend:
    """Trains through a clone of a ComfyUI ModelPatcher; the caller's model is never patched."""

    def __init__(self, model: Any, clip: Any, vae: Any,  # ComfyUI's ModelPatcher, CLIP and VAE
                 device: Optional[torch.device] = None,
                 load_model: Optional[Callable[[object], None]] = None):
        for attribute in ("clone", "set_model_attn1_patch", "set_model_attn2_patch", "model"):
            if not hasattr(model, attribute):
                raise InputError("model", f"has no {attribute}; connect a MODEL from a checkpoint loader")
        self.base_model, self.model, self.clip, self.vae = model, model.clone(), clip, vae
        self.load_model = load_model
        self.memo = None
        self.device = torch.device(device if device is not None else getattr(model, "load_device", "cpu"))

    # ------------------------------------------------------------------ model facts
    def _model_sampling(self) -> Any:  # ComfyUI's ModelSampling (EPS, V_PREDICTION, ...)
        getter = getattr(self.base_model, "get_model_object", None)
        if callable(getter):
            try:
                return getter("model_sampling")
            except (AttributeError, KeyError):
                pass
        return self.base_model.model.model_sampling

    def schedule(self) -> NoiseSchedule:
        sampling = self._model_sampling()
        names = _class_names(sampling)
        model_type = getattr(getattr(self.base_model.model, "model_type", None), "name", "")
        if "EDM" in names or "CONST" in names or model_type not in ("", "EPS", "V_PREDICTION"):
            raise InputError("model", f"model sampling {sorted(names)} / {model_type or '?'} is not a DDPM "
                             "eps or v model; only SD1/SD2-style checkpoints can be trained")
        if getattr(self._diffusion_model(), "num_classes", None) is not None:
            raise InputError("model", "this UNet needs extra (pooled/size) conditioning, as SDXL does; "
                             "only SD1/SD2-style checkpoints can be trained")
        alphas = getattr(sampling, "alphas_cumprod", None)
        if alphas is None:
            sigmas = sampling.sigmas.detach().double().cpu()
            alphas = 1.0 / (1.0 + sigmas ** 2)
        prediction = "v_prediction" if ("V_PREDICTION" in names or model_type == "V_PREDICTION") else "epsilon"
        return NoiseSchedule(torch.as_tensor(alphas).detach().float().cpu(), prediction)

    def attention_widths(self) -> list[int]:
        widths = model_attention_widths(self.base_model)
        if not widths:
            raise InputError("model", "cannot find the model's attention widths; set the sizes in the spec")
        return widths

    def _diffusion_model(self) -> torch.nn.Module:
        return self.model.model.diffusion_model

    def checkpoint_name(self) -> Optional[str]:
        """None: a ModelPatcher does not know which file it was loaded from."""
        return None

    # ------------------------------------------------------------------ training
    def attach(self, hypernetwork: Hypernetwork) -> None:
        self.model, self.memo = patched_for_training(self.base_model, hypernetwork)

    def predict(self, x_t: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.memo is not None:
            self.memo.reset()
        diffusion_model = self._diffusion_model()
        dtype = next(diffusion_model.parameters()).dtype
        options = dict(self.model.model_options.get("transformer_options", {}))
        out = diffusion_model(x_t.to(self.device, dtype), timesteps.to(self.device).float(),
                              context=context.to(self.device, dtype), transformer_options=options)
        return out

    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, None]:
        raw = self.vae.encode(pixels[..., :3])
        return self.model.model.process_latent_in(raw.float()).to(self.device), None

    def encode_texts(self, prompts: list[str]) -> list[torch.Tensor]:
        """One [T,D] per prompt; T is 77 per chunk, so long prompts are longer (padded when batched)."""
        return [self.clip.encode_from_tokens(self.clip.tokenize(text))[0].float() for text in prompts]

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            images = self.vae.decode(self.model.model.process_latent_out(latents.float()))
            return images.float().cpu().reshape(-1, *images.shape[-3:])

    def offload_encoders(self) -> None:
        """Nothing to do: ComfyUI's model management evicts CLIP and the VAE from the GPU when
        loading the UNet for training needs the room, and reloads them for previews."""

    @contextlib.contextmanager
    def session(self, gradient_checkpointing: bool) -> Iterator[None]:
        if self.load_model is not None:
            self.load_model(self.model)
        else:
            self.model.model_patches_to(self.device)
        diffusion_model = self._diffusion_model()
        _replace_inference_tensors(diffusion_model)
        blocks = []
        if gradient_checkpointing:
            for name in ("input_blocks", "middle_block", "output_blocks"):
                container = getattr(diffusion_model, name, None)
                if isinstance(container, torch.nn.ModuleList):
                    blocks.extend(container)
                elif isinstance(container, torch.nn.Module):
                    blocks.append(container)
        if self.memo is not None:
            self.memo.enabled = not gradient_checkpointing
        with frozen(diffusion_model), checkpointed(blocks):
            yield
