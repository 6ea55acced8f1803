"""A faithful stand-in for ComfyUI's MODEL/CLIP/VAE, following the documented contract only:
ModelPatcher.clone() copies model_options; set_model_attn1/2_patch append to
model_options["transformer_options"]["patches"]; the UNet at model.diffusion_model takes
transformer_options and its transformer block runs the patches on unprojected q/k/v;
model_sampling is a ModelSamplingDiscrete-like module holding only `sigmas` whose class
derives from EPS or V_PREDICTION; process_latent_in/out scale the latents."""
from __future__ import annotations

import copy
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from hypernet_studio.hypernet.sd.components import scaled_linear_alphas_cumprod

from .fakes import CHANNELS, FakeBackend, FakeUNet


class FakeComfyUNet(FakeUNet):
    """Same weights and math as FakeUNet, patches taken from transformer_options like ComfyUI."""

    def forward(self, x, timesteps=None, context=None, transformer_options=None, **kwargs):
        transformer_options = transformer_options or {}
        patches = transformer_options.get("patches", {})
        return super().forward(x, timesteps, context, patches.get("attn1_patch", []), patches.get("attn2_patch", []))


class EPS:
    pass


class V_PREDICTION(EPS):
    pass


def _model_sampling(prediction_class):
    class ModelSamplingDiscrete(torch.nn.Module, prediction_class):
        def __init__(self):
            super().__init__()
            alphas = scaled_linear_alphas_cumprod().double()
            self.register_buffer("sigmas", (((1 - alphas) / alphas) ** 0.5).float())

    return ModelSamplingDiscrete()


class FakeBaseModel(torch.nn.Module):
    def __init__(self, unet, prediction_class=EPS, scale=0.5):
        super().__init__()
        self.diffusion_model, self.model_sampling, self.scale = unet, _model_sampling(prediction_class), scale

    def process_latent_in(self, latent):
        return latent * self.scale

    def process_latent_out(self, latent):
        return latent / self.scale


class FakeModelPatcher:
    def __init__(self, model, model_options=None):
        self.model = model
        self.model_options = model_options if model_options is not None else {"transformer_options": {}}
        self.load_device = torch.device("cpu")
        self.patches_moved_to = []

    def clone(self):
        options = copy.copy(self.model_options)
        options["transformer_options"] = copy.copy(options["transformer_options"])
        if "patches" in options["transformer_options"]:
            options["transformer_options"]["patches"] = {k: list(v) for k, v in
                                                         options["transformer_options"]["patches"].items()}
        return FakeModelPatcher(self.model, options)

    def set_model_patch(self, patch, name):
        self.model_options["transformer_options"].setdefault("patches", {}).setdefault(name, []).append(patch)

    def set_model_attn1_patch(self, patch):
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch):
        self.set_model_patch(patch, "attn2_patch")

    def model_patches_to(self, device):
        self.patches_moved_to.append(device)
        for patches in self.model_options["transformer_options"].get("patches", {}).values():
            for patch in patches:
                if hasattr(patch, "to"):
                    patch.to(device)

    def get_model_object(self, name):
        return getattr(self.model, name)


class FakeCLIP:
    """tokenize / encode_from_tokens -> [1, T, D] (T = 5 here, like a 77-token chunk)."""

    def __init__(self):
        self.reference = FakeBackend()

    def tokenize(self, text):
        return {"text": text}

    def encode_from_tokens(self, tokens, return_pooled=False):
        return self.reference.encode_texts([tokens["text"]])


class FakeVAE:
    """encode(BHWC) -> raw latents (scaled in by process_latent_in), decode -> BHWC."""

    def __init__(self, scale=0.5):
        self.reference, self.scale = FakeBackend(), scale

    def encode(self, pixels):
        mean, _ = self.reference.encode_images(pixels)
        return mean / self.scale

    def decode(self, raw):
        return self.reference.decode_latents(raw * self.scale)


def comfy_objects(prediction_class=EPS):
    unet = FakeComfyUNet()
    return FakeModelPatcher(FakeBaseModel(unet, prediction_class)), FakeCLIP(), FakeVAE()


# --------------------------------------------------------------------------- SDXL
POOLED = 6  # the stand-in's pooled width (1280 in SDXL)
SIZE_VALUES = 6  # height, width, crop_h, crop_w, target_height, target_width


class FakeComfySDXLUNet(FakeComfyUNet):
    """Like ComfyUI's SDXL UNetModel: `num_classes` is set and `y` (the pooled output and the size
    values, as the model's encode_adm built it) enters through a label embedding."""

    def __init__(self):
        super().__init__()
        self.num_classes = "sequential"
        self.label_emb = torch.nn.Linear(POOLED + SIZE_VALUES, 4)
        self.seen_y = []

    def forward(self, x, timesteps=None, context=None, y=None, transformer_options=None, **kwargs):
        assert y is not None and y.shape == (x.shape[0], POOLED + SIZE_VALUES), "SDXL needs y"
        self.seen_y.append(y.detach().clone())
        return super().forward(x, timesteps, context, transformer_options) + self.label_emb(y)[:, :, None, None]


class SDXL(FakeBaseModel):
    """Named like ComfyUI's SDXL model class; encode_adm records what it was asked for."""

    def __init__(self, unet):
        super().__init__(unet)
        self.adm_calls = []

    def encode_adm(self, **kwargs):
        self.adm_calls.append({k: v for k, v in kwargs.items() if k != "pooled_output"})
        pooled = kwargs["pooled_output"]
        sizes = torch.tensor([float(kwargs[k]) for k in ("height", "width", "crop_h", "crop_w", "target_height",
                                                         "target_width")]) / 100.0
        return torch.cat([pooled, sizes.expand(pooled.shape[0], -1)], dim=1)


class FakeSDXLCLIP(FakeCLIP):
    """encode_from_tokens(return_pooled=True) -> (context [1,T,D], pooled [1,POOLED])."""

    def encode_from_tokens(self, tokens, return_pooled=False):
        context = super().encode_from_tokens(tokens)
        return (context, context.sum(1)[:, :POOLED] / 5.0) if return_pooled else context


def comfy_sdxl_objects():
    return FakeModelPatcher(SDXL(FakeComfySDXLUNet())), FakeSDXLCLIP(), FakeVAE()


# --------------------------------------------------------------------------- ComfyUI's call pattern
class TimestepBlock(torch.nn.Module):
    """Marks the layers that take the time embedding, as in ComfyUI's openaimodel.py."""


class FakeResBlock(TimestepBlock):
    def __init__(self, channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = torch.nn.Linear(CHANNELS, channels)
        self.calls = 0

    def forward(self, x, emb):
        self.calls += 1
        return x + self.conv(torch.nn.functional.silu(x)) + self.emb(emb)[:, :, None, None]


class FakeSpatialTransformer(torch.nn.Module):
    """Self- and cross-attention over the pixels, running the transformer_options patches."""

    def __init__(self):
        super().__init__()
        reference = FakeUNet()
        self.norm1, self.norm2 = reference.norm1, reference.norm2
        self.attn1, self.attn2 = reference.attn1, reference.attn2
        self.calls = 0

    def forward(self, x, context, transformer_options):
        self.calls += 1
        patches = transformer_options.get("patches", {})
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q = k = v = self.norm1(tokens)
        for patch in patches.get("attn1_patch", []):
            q, k, v = patch(q, k, v, transformer_options)
        tokens = tokens + FakeUNet._attend(self.attn1, q, k, v)
        q, k, v = self.norm2(tokens), context, context
        for patch in patches.get("attn2_patch", []):
            q, k, v = patch(q, k, v, transformer_options)
        tokens = tokens + FakeUNet._attend(self.attn2, q, k, v)
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


class TimestepEmbedSequential(torch.nn.Sequential, TimestepBlock):
    """ComfyUI's container: its forward exists, but the UNet never calls it (see below)."""

    def forward(self, *args, **kwargs):
        return forward_timestep_embed(self, *args, **kwargs)


def forward_timestep_embed(ts, x, emb, context=None, transformer_options={}):  # noqa: B006 (ComfyUI's signature)
    """ComfyUI's openaimodel.forward_timestep_embed, reduced to the layer kinds used here: it
    iterates the block's children and calls each one itself."""
    for layer in ts:
        if isinstance(layer, TimestepBlock):
            x = layer(x, emb)
        elif isinstance(layer, FakeSpatialTransformer):
            x = layer(x, context, transformer_options)
            if "transformer_index" in transformer_options:
                transformer_options["transformer_index"] += 1
        else:
            x = layer(x)
    return x


class FakeOpenAIUNet(torch.nn.Module):
    """input_blocks / middle_block / output_blocks run as ComfyUI's UNetModel.forward runs them:
    through forward_timestep_embed(module, ...), never through module.forward."""

    in_channels = 4

    def __init__(self, depth=2):
        super().__init__()
        torch.manual_seed(3)
        self.time = torch.nn.Linear(1, CHANNELS)
        self.conv_in = torch.nn.Conv2d(4, CHANNELS, 3, padding=1)
        self.input_blocks = torch.nn.ModuleList(
            [TimestepEmbedSequential(FakeResBlock(CHANNELS), FakeSpatialTransformer()) for _ in range(depth)])
        self.middle_block = TimestepEmbedSequential(FakeResBlock(CHANNELS), FakeSpatialTransformer(),
                                                    FakeResBlock(CHANNELS))
        self.output_blocks = torch.nn.ModuleList(
            [TimestepEmbedSequential(FakeResBlock(CHANNELS), FakeSpatialTransformer()) for _ in range(depth)])
        self.conv_out = torch.nn.Conv2d(CHANNELS, 4, 3, padding=1)
        self.seen_dtypes = []

    def forward(self, x, timesteps=None, context=None, y=None, transformer_options={}, **kwargs):  # noqa: B006
        if any(p.dtype != x.dtype for p in self.parameters()) and not getattr(self, "_casting", False):
            return self._call_with_weights_cast(x, timesteps, context=context, y=y,
                                                transformer_options=transformer_options, **kwargs)
        self.seen_dtypes.append((x.dtype, context.dtype))
        transformer_options = dict(transformer_options)
        transformer_options["transformer_index"] = 0
        emb = self.time(timesteps.to(x.dtype).view(-1, 1) / 1000.0)
        h = self.conv_in(x)
        skips = []
        for module in self.input_blocks:
            h = forward_timestep_embed(module, h, emb, context, transformer_options)
            skips.append(h)
        h = forward_timestep_embed(self.middle_block, h, emb, context, transformer_options)
        for module in self.output_blocks:
            h = forward_timestep_embed(module, h + skips.pop(), emb, context, transformer_options)
        return self.conv_out(h)

    def store_weights_as(self, dtype):
        """Weights stored in `dtype` and cast to the input's dtype in every call, as ComfyUI's
        manual-cast layers (comfy.ops) do for fp8 or fp16 storage."""
        for parameter in self.parameters():
            parameter.data = parameter.data.to(dtype)

    def _call_with_weights_cast(self, x, *args, **kwargs):
        weights = {name: parameter.to(x.dtype) for name, parameter in self.named_parameters()}
        self._casting = True
        try:
            return torch.func.functional_call(self, weights, (x, *args), kwargs)
        finally:
            self._casting = False

    def block_layers(self):
        return [layer for block in (*self.input_blocks, self.middle_block, *self.output_blocks) for layer in block]


def comfy_openai_objects(**unet_options):
    return FakeModelPatcher(FakeBaseModel(FakeOpenAIUNet(**unet_options))), FakeCLIP(), FakeVAE()


# --------------------------------------------------------------------------- model management
class FakeModelManagement:
    """ComfyUI's load_models_gpu, reduced to what training meets: loading a CLIP or VAE for an
    encode or a decode needs the room, so it evicts every other loaded patcher, as free_memory
    does under VRAM pressure (detach: weights to the offload device, loaded size 0, patches
    to the offload device). `events` records the order of loads, evictions and UNet calls."""

    def __init__(self):
        self.loaded, self.events, self.calls = [], [], []

    def load_models_gpu_for_training(self, model, memory_required):
        """The host's load_model_for_training (nodes/comfy_host.py): a full load with room kept."""
        self.load_models_gpu([model], memory_required=memory_required, force_full_load=True)

    def load_models_gpu(self, models, memory_required=0.0, force_full_load=False):
        self.calls.append((models, memory_required))
        for model in models:
            for other in [m for m in self.loaded if m is not model and m.model is not model.model]:
                other.detach()
                self.loaded.remove(other)
                self.events.append(("evicted", other.name))
            if model not in self.loaded:
                model.load(self)
                self.loaded.append(model)
                self.events.append(("loaded", model.name))


class ManagedPatcherMixin:
    """What ComfyUI's ModelPatcher adds for model management (loaded_size, current_loaded_device,
    detach). Its load, like LoadedModel.model_load, moves the patches to the load device. The
    offload device is `meta` here so that where the patches were sent stays visible on a
    CPU-only machine; moving to it is recorded, not done."""

    name = "unet"
    offload_device = torch.device("meta")

    def loaded_size(self):
        return getattr(self.model, "model_loaded_weight_memory", 0)

    def current_loaded_device(self):
        return getattr(self.model, "device", self.offload_device)

    def load(self, management):
        self.model_patches_to(self.load_device)
        self.model.model_loaded_weight_memory, self.model.device = 1, self.load_device

    def detach(self):
        self.model_patches_to(self.offload_device)
        self.model.model_loaded_weight_memory, self.model.device = 0, self.offload_device


class ManagedModelPatcher(ManagedPatcherMixin, FakeModelPatcher):
    def model_patches_to(self, device):
        self.model.management.events.append(("patches_to", torch.device(device).type))
        if torch.device(device).type != "meta":
            super().model_patches_to(device)

    def clone(self):
        clone = super().clone()
        return ManagedModelPatcher(clone.model, clone.model_options)


class ManagedEncoder(ManagedPatcherMixin):
    """A CLIP's or VAE's patcher: loads itself through the management before it works."""

    load_device = torch.device("cpu")

    def __init__(self, name):
        self.name, self.model = name, torch.nn.Module()

    def model_patches_to(self, device):
        pass


def comfy_managed_objects():
    """Fakes where every CLIP encode and VAE decode asks the model management for room first,
    and the base model estimates inference memory the way ComfyUI's model.memory_required is
    called (an input shape in, bytes out). Returns (model, clip, vae, management)."""
    management = FakeModelManagement()
    model, clip, vae = comfy_objects()
    base = model.model
    base.management = management
    base.memory_required = lambda input_shape: 1000.0 * float(torch.tensor(input_shape).prod())
    unet = base.diffusion_model
    unet_forward = unet.forward

    def recording_forward(*args, **kwargs):
        management.events.append(("unet", None))
        return unet_forward(*args, **kwargs)

    unet.forward = recording_forward
    clip_patcher, vae_patcher = ManagedEncoder("clip"), ManagedEncoder("vae")
    encode, decode = clip.encode_from_tokens, vae.decode

    def managed_encode(tokens, return_pooled=False):
        management.load_models_gpu([clip_patcher])
        return encode(tokens, return_pooled)

    def managed_decode(raw):
        management.load_models_gpu([vae_patcher])
        return decode(raw)

    clip.encode_from_tokens, vae.decode = managed_encode, managed_decode
    return ManagedModelPatcher(base, model.model_options), clip, vae, management


# --------------------------------------------------------------------------- measuring
class PeakMemory(TorchDispatchMode):
    """The peak of the bytes held by tensors that torch operations created while it was active:
    each new storage counts from its creation until it is freed (torch keeps one Python object
    per storage alive as long as the storage, so a weak reference follows its lifetime). Views
    and in-place results share an input's storage and are not new: weights made before, and
    their transposes, do not count."""

    def __init__(self):
        super().__init__()
        self.seen, self.current, self.peak = WeakIdKeyDictionary(), 0, 0

    def _freed(self, size):
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {tensor.untyped_storage().data_ptr() for tensor in tree_flatten((args, kwargs))[0]
                  if isinstance(tensor, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                storage = tensor.untyped_storage()
                if storage.data_ptr() in inputs or storage in self.seen:
                    continue
                size = storage.nbytes()
                self.seen[storage] = size
                weakref.finalize(storage, self._freed, size)
                self.current += size
                self.peak = max(self.peak, self.current)
        return out
