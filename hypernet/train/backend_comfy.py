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
- CLIP `tokenize` + `encode_from_tokens` (with `return_pooled=True` for SDXL), VAE
  `encode(BHWC)` / `decode`;
- for SDXL, `model.model.encode_adm(pooled_output=..., width=..., ...)`, the model's own builder
  of the UNet's extra input `y` (pooled output and size values).
We call the diffusion model directly at the integer DDPM timestep rather than
`apply_model`, which returns the denoised image and would need dividing by sigma again.
Loading the model onto the GPU needs ComfyUI's model management, so the node passes it in
as `load_model(model, memory_required)` (the host's load_model_for_training)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch

from ..errors import InputError
from ..network import Hypernetwork
from ..patch import model_attention_widths
from ..sd.components import TextConditioning
from ..training_patch import ContextMemoPatch, patched_for_training
from .backend import NoiseSchedule, checkpointed, frozen
from .conditioning import Conditioning, split
from .encoding_cache import identity_text, weights_digest

# Training memory over ComfyUI's estimate for one inference call on the same batch (see
# ComfyBackend._training_memory): a margin, not a measurement.
TRAINING_MEMORY_FACTOR = 4.0
CHECKPOINTED_TRAINING_MEMORY_FACTOR = 2.0


def _same_device(a: torch.device, b: torch.device) -> bool:
    """cuda and cuda:0 are the same device when one of them leaves the index out."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


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
                 load_model: Optional[Callable[[object, float], None]] = None):
        for attribute in ("clone", "set_model_attn1_patch", "set_model_attn2_patch", "model"):
            if not hasattr(model, attribute):
                raise InputError("model", f"has no {attribute}; connect a MODEL from a checkpoint loader")
        self.base_model, self.model, self.clip, self.vae = model, model.clone(), clip, vae
        self.load_model = load_model
        self.memo: Optional[ContextMemoPatch] = None  # set by attach()
        self.gradient_checkpointing = False
        self.memory_required: Optional[float] = None  # bytes asked for the activations; None: not loaded yet
        self.reloads = 0  # how often model management had unloaded the UNet during training
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
        self._check_conditioning()
        alphas = getattr(sampling, "alphas_cumprod", None)
        if alphas is None:
            sigmas = sampling.sigmas.detach().double().cpu()
            alphas = 1.0 / (1.0 + sigmas ** 2)
        prediction = "v_prediction" if ("V_PREDICTION" in names or model_type == "V_PREDICTION") else "epsilon"
        return NoiseSchedule(torch.as_tensor(alphas).detach().float().cpu(), prediction)

    def _check_conditioning(self) -> None:
        """SD1/SD2 (text only) and SDXL base (plus pooled and size values) train; refiners,
        inpainting and other UNets that need inputs we do not give are refused."""
        diffusion_model = self._diffusion_model()
        if int(getattr(diffusion_model, "in_channels", 4)) != 4:
            raise InputError("model", f"this UNet takes {diffusion_model.in_channels} input channels (an inpainting "
                             "or instruct model); only text-to-image SD1/SD2/SDXL checkpoints can be trained")
        if getattr(diffusion_model, "num_classes", None) is not None and not self.uses_pooled:
            raise InputError("model", f"{type(self.base_model.model).__name__} needs conditioning other than "
                             "text (an SDXL refiner, unCLIP, ...); only SD1/SD2 and SDXL base can be trained")

    @property
    def uses_pooled(self) -> bool:
        """SDXL base and its distilled variants: ComfyUI's SDXL model class, or one derived from it."""
        return "SDXL" in _class_names(self.base_model.model)

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

    def predict(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        self._ensure_loaded(x_t.shape)
        diffusion_model = self._diffusion_model()
        dtype = self.compute_dtype()
        context, pooled = split(cond)
        context = context.to(self.device, dtype)
        if self.memo is not None:
            self.memo.prime(context)
        options = dict(self.model.model_options.get("transformer_options", {}))
        extra = {} if pooled is None else {"y": self._size_and_pooled(pooled, x_t).to(self.device, dtype)}
        return diffusion_model(x_t.to(self.device, dtype), timesteps.to(self.device).float(), context=context,
                               transformer_options=options, **extra)

    def compute_dtype(self) -> torch.dtype:
        """The dtype ComfyUI's own apply_model feeds the UNet: `manual_cast_dtype` when the weights
        are stored in a dtype the device does not compute in (fp8, or fp16 where only fp32 works),
        whose layers then cast each weight to the input's dtype; else the weights' dtype."""
        base_model = self.model.model
        manual_cast = getattr(base_model, "manual_cast_dtype", None)
        if manual_cast is not None:
            return manual_cast
        get_dtype = getattr(base_model, "get_dtype", None)
        return get_dtype() if callable(get_dtype) else next(self._diffusion_model().parameters()).dtype

    # ------------------------------------------------------------------ ComfyUI's model management
    def _ensure_loaded(self, input_shape: torch.Size) -> None:
        """Load the UNet before its first training call, with room for the activations of a batch
        of this shape, and again whenever ComfyUI's model management unloaded it meanwhile: a
        preview's VAE decode or a per-step CLIP encode loads models too and may evict the UNet,
        which moves its patches, the trainable hypernetwork among them, to the offload device."""
        if self.memory_required is None:
            self.memory_required = self._training_memory(input_shape)
            self._load()
        elif not self._still_loaded():
            self.reloads += 1
            self._load()

    def _training_memory(self, input_shape: torch.Size) -> float:
        """ComfyUI's estimate for one inference call on `input_shape` (model.memory_required, as its
        sampler asks), times a margin for training: the forward keeps its activations for the
        backward pass, which needs its own temporaries on top. The margin is not calibrated on
        a GPU yet (docs/compatibility.md)."""
        estimate = getattr(self.model.model, "memory_required", None)
        if not callable(estimate):
            return 0.0
        factor = CHECKPOINTED_TRAINING_MEMORY_FACTOR if self.gradient_checkpointing else TRAINING_MEMORY_FACTOR
        return float(estimate(list(input_shape))) * factor

    def _still_loaded(self) -> bool:
        """False once ComfyUI unloaded the patcher: its weights left the device (an unpatch sets the
        loaded size to 0 and the current device to the offload device). Attribute reads only."""
        loaded_size = getattr(self.model, "loaded_size", None)
        if callable(loaded_size) and loaded_size() == 0:
            return False
        current_device = getattr(self.model, "current_loaded_device", None)
        return not callable(current_device) or _same_device(torch.device(current_device()), self.device)

    def _load(self) -> None:
        if self.load_model is not None:
            self.load_model(self.model, self.memory_required or 0.0)
        # ComfyUI's load moves the patches to the device too; the hook may be a stand-in that does not.
        self.model.model_patches_to(self.device)
        _replace_inference_tensors(self._diffusion_model())

    def _size_and_pooled(self, pooled: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """SDXL's extra input, built by ComfyUI's own model (encode_adm) as its sampler builds it
        for a plain text encode: the picture's size (latent x 8), no crop, the same target."""
        height, width = int(x_t.shape[-2]) * 8, int(x_t.shape[-1]) * 8
        return self.base_model.model.encode_adm(pooled_output=pooled, width=width, height=height, crop_w=0, crop_h=0,
                                                target_width=width, target_height=height)

    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, None]:
        raw = self.vae.encode(pixels[..., :3])
        return self.model.model.process_latent_in(raw.float()).to(self.device), None

    def vae_identity(self) -> Optional[str]:
        """What makes this VAE's latents, for the persistent cache: its weights and dtype, the
        model's latent format (process_latent_in), and that ComfyUI's encode gives the mean only.
        None (no cache) for a VAE whose weights cannot be found."""
        module = getattr(self.vae, "first_stage_model", None)
        if not isinstance(module, torch.nn.Module):
            return None
        latent_format = getattr(self.base_model.model, "latent_format", None)
        return identity_text("comfy", "mean-only", weights_digest(module), getattr(self.vae, "vae_dtype", None),
                             type(latent_format).__name__, getattr(latent_format, "scale_factor", None),
                             getattr(latent_format, "shift_factor", None), _patch_identity(self.vae))

    def clip_identity(self) -> Optional[str]:
        """What makes this CLIP's conditionings, for the persistent cache: its weights, the layer
        read (CLIP Set Last Layer), its tokenizer and options, LoRA patches, the pooled output."""
        module = getattr(self.clip, "cond_stage_model", None)
        if not isinstance(module, torch.nn.Module):
            return None
        options = getattr(self.clip, "tokenizer_options", None) or {}
        return identity_text("comfy", type(module).__name__, type(getattr(self.clip, "tokenizer", None)).__name__,
                             getattr(self.clip, "layer_idx", None), sorted(options.items()), self.uses_pooled,
                             weights_digest(module), _patch_identity(self.clip))

    def encode_texts(self, prompts: list[str]) -> list[Conditioning]:
        """One [T,D] per prompt (T is 77 per chunk, so long prompts are longer, padded when
        batched); for SDXL a TextConditioning with the pooled output, from ComfyUI's CLIP."""
        if not self.uses_pooled:
            return [self.clip.encode_from_tokens(self.clip.tokenize(text))[0].float() for text in prompts]
        encoded: list[Conditioning] = []
        for text in prompts:
            context, pooled = self.clip.encode_from_tokens(self.clip.tokenize(text), return_pooled=True)
            encoded.append(TextConditioning(context[0].float(), pooled.reshape(-1).float()))
        return encoded

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            images = self.vae.decode(self.model.model.process_latent_out(latents.float()))
            return images.float().cpu().reshape(-1, *images.shape[-3:])

    def offload_encoders(self) -> None:
        """No effect in ComfyUI (docs/compatibility.md): its model management decides where CLIP and
        the VAE live. Loading the UNet with the training estimate makes it evict them when the
        room is needed; it loads them again for a preview or a per-step encode."""

    @contextlib.contextmanager
    def session(self, gradient_checkpointing: bool) -> Iterator[None]:
        self.gradient_checkpointing = gradient_checkpointing
        self.memory_required, self.reloads = None, 0  # predict() loads the UNet, sized to the batch
        diffusion_model = self._diffusion_model()
        _replace_inference_tensors(diffusion_model)  # before frozen(), which restores the flags it saw
        if self.memo is not None:
            self.memo.lazy = not gradient_checkpointing
        layers = _checkpointed_layers(diffusion_model) if gradient_checkpointing else []
        with frozen(diffusion_model), checkpointed(layers):
            yield


def _patch_identity(owner: Any) -> str:  # ComfyUI's CLIP or VAE
    """Its patcher's patches (a LoRA on the CLIP): "" without any, else their uuid, which ComfyUI
    renews whenever patches are added, so patched encoders never share an identity with others."""
    patcher = getattr(owner, "patcher", None)
    if not getattr(patcher, "patches", None):
        return ""
    return f"patches:{getattr(patcher, 'patches_uuid', id(patcher))}"


def _checkpointed_layers(diffusion_model: torch.nn.Module) -> list[torch.nn.Module]:
    """What ComfyUI's UNet actually calls. Its UNetModel.forward runs each entry of
    input_blocks / middle_block / output_blocks through forward_timestep_embed(module, ...),
    which iterates the entry's children (ResBlock, SpatialTransformer, Downsample, ...) and
    calls each one: the entry's own forward never runs, so the children are what gets wrapped
    (as ComfyUI's own trainer does). A block that is not a container is wrapped itself."""
    layers: list[torch.nn.Module] = []
    for name in ("input_blocks", "middle_block", "output_blocks"):
        container = getattr(diffusion_model, name, None)
        blocks = list(container) if isinstance(container, torch.nn.ModuleList) else [container]
        for block in blocks:
            if isinstance(block, torch.nn.Sequential):
                layers.extend(block.children())
            elif isinstance(block, torch.nn.Module):
                layers.append(block)
    return layers
