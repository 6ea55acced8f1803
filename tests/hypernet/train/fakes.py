"""A tiny stand-in UNet and backend for loop tests: one self-attention and one cross-attention
whose unprojected k/v inputs go through the attached patches, as the patch contract says."""
from __future__ import annotations

import contextlib

import torch

from hypernet_studio.hypernet.patch import HypernetPatch
from hypernet_studio.hypernet.sd.components import scaled_linear_alphas_cumprod
from hypernet_studio.hypernet.train.backend import NoiseSchedule, frozen

CHANNELS, CONTEXT = 8, 12


class FakeUNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.conv_in = torch.nn.Conv2d(4, CHANNELS, 3, padding=1)
        self.time = torch.nn.Linear(1, CHANNELS)
        self.norm1, self.norm2 = torch.nn.LayerNorm(CHANNELS), torch.nn.LayerNorm(CHANNELS)
        self.attn1 = torch.nn.ModuleDict({n: torch.nn.Linear(CHANNELS, CHANNELS) for n in "qkv"})
        self.attn2 = torch.nn.ModuleDict({"q": torch.nn.Linear(CHANNELS, CHANNELS),
                                          "k": torch.nn.Linear(CONTEXT, CHANNELS),
                                          "v": torch.nn.Linear(CONTEXT, CHANNELS)})
        self.conv_out = torch.nn.Conv2d(CHANNELS, 4, 3, padding=1)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)

    @staticmethod
    def _attend(layers, q, k, v):
        q, k, v = layers["q"](q), layers["k"](k), layers["v"](v)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    def forward(self, x, timesteps, context, attn1_patches=(), attn2_patches=()):
        h = self.conv_in(x) + self.time(timesteps.float().view(-1, 1) / 1000.0)[:, :, None, None]
        batch, channels, height, width = h.shape
        tokens = h.flatten(2).transpose(1, 2)
        n = self.norm1(tokens)
        q, k, v = n, n, n
        for patch in attn1_patches:
            q, k, v = patch(q, k, v, {})
        tokens = tokens + self._attend(self.attn1, q, k, v)
        q, k, v = self.norm2(tokens), context, context
        for patch in attn2_patches:
            q, k, v = patch(q, k, v, {})
        tokens = tokens + self._attend(self.attn2, q, k, v)
        return self.conv_out(tokens.transpose(1, 2).reshape(batch, channels, height, width))


class FakeBackend:
    """Latents = average-pooled pixels (4 channels), text = hashed bag of characters."""

    def __init__(self, prediction_type="epsilon", nan_at_call=None):
        self.device = torch.device("cpu")
        self.unet = FakeUNet()
        self.patch = None
        self.prediction_type = prediction_type
        self.encoded_texts, self.encoded_images, self.offloaded, self.calls = [], 0, False, 0
        self.nan_at_call = nan_at_call

    def schedule(self):
        return NoiseSchedule(scaled_linear_alphas_cumprod(), self.prediction_type)

    def attention_widths(self):
        return [CHANNELS, CONTEXT]

    def compute_dtype(self):
        return next(self.unet.parameters()).dtype

    def attach(self, hypernetwork):
        self.patch = HypernetPatch([(hypernetwork, 1.0)])

    def predict(self, x_t, timesteps, context):
        self.calls += 1
        patches = (self.patch,) if self.patch is not None else ()
        out = self.unet(x_t, timesteps, context, patches, patches)
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            out = out * float("nan")
        return out

    def encode_images(self, pixels):
        self.encoded_images += pixels.shape[0]
        x = pixels.movedim(-1, 1)
        x = torch.cat([x, x.mean(1, keepdim=True)], 1) * 2 - 1
        mean = torch.nn.functional.avg_pool2d(x, 8)
        return mean, torch.full_like(mean, 0.1)

    def encode_texts(self, prompts):
        self.encoded_texts.extend(prompts)
        out = torch.zeros(len(prompts), 5, CONTEXT)
        for row, text in enumerate(prompts):
            for position, char in enumerate(text[:40]):
                out[row, position % 5, ord(char) % CONTEXT] += 1.0
        return out

    def decode_latents(self, latents):
        up = torch.nn.functional.interpolate(latents[:, :3], scale_factor=8)
        return ((up + 1) / 2).clamp(0, 1).movedim(1, -1)

    def offload_encoders(self):
        self.offloaded = True

    @contextlib.contextmanager
    def session(self, gradient_checkpointing):
        with frozen(self.unet):
            yield


def tiny_dataset(count=4, size=16, seed=0):
    """`count` random images [1,size,size,3] with captions."""
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(1, size, size, 3, generator=generator) for _ in range(count)]
    captions = [f"tag{i}, red, blue, shape{i % 2}" for i in range(count)]
    return images, captions
