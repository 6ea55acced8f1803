"""A faithful stand-in for ComfyUI's MODEL/CLIP/VAE, following the documented contract only:
ModelPatcher.clone() copies model_options; set_model_attn1/2_patch append to
model_options["transformer_options"]["patches"]; the UNet at model.diffusion_model takes
transformer_options and its transformer block runs the patches on unprojected q/k/v;
model_sampling is a ModelSamplingDiscrete-like module holding only `sigmas` whose class
derives from EPS or V_PREDICTION; process_latent_in/out scale the latents."""
from __future__ import annotations

import copy

import torch

from hypernet_studio.hypernet.sd.components import scaled_linear_alphas_cumprod

from .fakes import FakeBackend, FakeUNet


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
