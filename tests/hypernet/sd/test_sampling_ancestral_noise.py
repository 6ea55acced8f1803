"""euler_ancestral draws its per-step noise as ComfyUI does: from a separate generator seeded
with seed + 1 on the CPU. Found by comparing headless pictures with real ComfyUI's on the same
checkpoint and seed (the other samplers matched to 1/255; this one did not)."""
import math

import torch

from hypernet_studio.hypernet.sd.components import scaled_linear_alphas_cumprod
from hypernet_studio.hypernet.sd.sampling import DiscreteSchedule, compute_sigmas, sample


class _ZeroNoiseModel:
    """Predicts zero noise, so the denoised image is x itself and only the added noise moves x."""
    alphas_cumprod = scaled_linear_alphas_cumprod()
    latent_scale_factor = 0.5
    prediction_type = "epsilon"
    load_device = torch.device("cpu")

    def apply_model(self, x, timesteps, context):
        return torch.zeros_like(x)


def test_ancestral_step_noise_comes_from_seed_plus_one():
    seed, steps, shape = 1234, 4, (1, 4, 8, 8)
    latent = torch.zeros(shape)
    context = torch.zeros(1, 3, 8)
    result = sample(_ZeroNoiseModel(), latent, context, context, seed=seed, steps=steps, cfg=1.0,
                    sampler_name="euler_ancestral", scheduler="normal")

    sigmas = compute_sigmas(DiscreteSchedule(_ZeroNoiseModel.alphas_cumprod), "normal", steps).double()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).double() * math.sqrt(1 + sigmas[0] ** 2)
    step_noise = torch.Generator().manual_seed(seed + 1)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        if sigma_next > 0:
            sigma_up = min(sigma_next, (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
            x = x + torch.randn(shape, generator=step_noise).double() * sigma_up
    expected = x / _ZeroNoiseModel.latent_scale_factor
    assert torch.allclose(result.double(), expected, atol=1e-4)
