"""k-diffusion-style samplers over a sigma schedule, as ComfyUI's KSampler runs them.

Latents live in "sigma space": x = x0 + sigma * noise, with the DDPM table giving
sigma_t = sqrt((1 - abar_t) / abar_t). The UNet sees x / sqrt(sigma^2 + 1) and a
(fractional) DDPM timestep found by interpolating log-sigma, and predicts eps or v; the
denoiser turns that into an estimate of x0. The samplers and schedulers follow the
published algorithms (Karras et al. 2022; DPM-Solver++ by Lu et al. 2022; k-diffusion's
formulations), rewritten here. "ddim" is the deterministic DDIM update, which in sigma
space is exactly the Euler step, so it shares Euler's code as ComfyUI's does.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import numpy as np
import torch

from .components import Conditioning, TextConditioning
from .sdxl import SIZE_VALUES, batched, latent_time_ids

SAMPLER_NAMES = ["euler", "euler_ancestral", "heun", "lms", "dpmpp_2m", "ddim"]
SCHEDULER_NAMES = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform"]

# A denoiser maps (x in sigma space, sigma [B]) -> predicted x0.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------- noise table
class DiscreteSchedule:
    """Sigmas of a 1000-step DDPM table and the sigma <-> timestep maps."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        alphas_cumprod = alphas_cumprod.to(torch.float64)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
        self.log_sigmas = self.sigmas.log()
        # log_sigmas copied once per device that timestep() sees: the sampler's sigma lives where
        # the model does, and a CPU table mixed into a GPU op raises (copied per call, it would sync).
        self._log_sigmas_on: dict[torch.device, torch.Tensor] = {torch.device("cpu"): self.log_sigmas}

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def _table_on(self, device: torch.device) -> torch.Tensor:
        """log_sigmas on `device` (fp32 on MPS, which has no fp64)."""
        table = self._log_sigmas_on.get(device)
        if table is None:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            table = self._log_sigmas_on[device] = self.log_sigmas.to(device, dtype)
        return table

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional DDPM timestep whose log-sigma interpolates to `sigma`, on `sigma`'s device."""
        log_sigmas = self._table_on(sigma.device)
        log_sigma = sigma.to(log_sigmas.dtype).log().reshape(-1, 1)
        distances = log_sigma - log_sigmas.reshape(1, -1)
        low = (distances >= 0).cumsum(dim=1).argmax(dim=1).clamp(max=len(log_sigmas) - 2)
        low_value, high_value = log_sigmas[low], log_sigmas[low + 1]
        weight = ((low_value - log_sigma.reshape(-1)) / (low_value - high_value)).clamp(0, 1)
        return ((1 - weight) * low + weight * (low + 1)).reshape(sigma.shape).to(torch.float32)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a fractional timestep, interpolating log-sigma linearly."""
        timestep = timestep.to(torch.float64).clamp(0, len(self.sigmas) - 1)
        low = timestep.floor().long()
        high = timestep.ceil().long()
        weight = timestep - low
        return ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()


# --------------------------------------------------------------------------- schedulers
def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def compute_sigmas(schedule: DiscreteSchedule, scheduler: str, steps: int) -> torch.Tensor:
    """Decreasing sigmas ending in 0 for the named scheduler (float64, CPU): `steps + 1` of
    them, except ddim_uniform, which takes every (1000 // steps)-th table entry."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if scheduler == "normal":
        start, end = schedule.timestep(torch.tensor(schedule.sigma_max)), schedule.timestep(
            torch.tensor(schedule.sigma_min))
        return _append_zero(schedule.sigma(torch.linspace(float(start), float(end), steps, dtype=torch.float64)))
    if scheduler == "sgm_uniform":
        start, end = schedule.timestep(torch.tensor(schedule.sigma_max)), schedule.timestep(
            torch.tensor(schedule.sigma_min))
        timesteps = torch.linspace(float(start), float(end), steps + 1, dtype=torch.float64)[:-1]
        return _append_zero(schedule.sigma(timesteps))
    if scheduler == "karras":
        rho = 7.0
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        max_inv, min_inv = schedule.sigma_max ** (1 / rho), schedule.sigma_min ** (1 / rho)
        return _append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)
    if scheduler == "exponential":
        return _append_zero(torch.linspace(math.log(schedule.sigma_max), math.log(schedule.sigma_min), steps,
                                           dtype=torch.float64).exp())
    if scheduler == "simple":
        stride = len(schedule.sigmas) / steps
        picked = [schedule.sigmas[-(1 + int(i * stride))] for i in range(steps)]
        return _append_zero(torch.stack(picked))
    if scheduler == "ddim_uniform":
        stride = max(len(schedule.sigmas) // steps, 1)
        # Every stride-th sigma from index 1 up; like ComfyUI this can give a step or two more.
        strided = schedule.sigmas[torch.arange(1, len(schedule.sigmas), stride)].flip(0)
        return _append_zero(strided)
    raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULER_NAMES}")


def sigmas_for_denoise(schedule: DiscreteSchedule, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """The tail of a longer schedule when denoise < 1, so only the last `steps` run."""
    if denoise <= 0:
        return torch.zeros(1, dtype=torch.float64)
    if denoise >= 0.9999:
        return compute_sigmas(schedule, scheduler, steps)
    total_steps = int(steps / denoise)
    return compute_sigmas(schedule, scheduler, total_steps)[-(steps + 1):]


# --------------------------------------------------------------------------- denoiser
def make_denoiser(apply_model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                  schedule: DiscreteSchedule, prediction_type: str, context: torch.Tensor) -> Denoiser:
    """Wrap a UNet call (scaled x, timestep, context) into an x0-predicting denoiser."""
    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(x.device, x.dtype).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
        c_in = 1.0 / (sigma ** 2 + 1.0).sqrt()
        timesteps = schedule.timestep(sigma.reshape(-1))
        out = apply_model(x * c_in, timesteps, context)
        if prediction_type == "v_prediction":
            c_skip = 1.0 / (sigma ** 2 + 1.0)
            c_out = -sigma * c_in
            return x * c_skip + out * c_out
        return x - out * sigma
    return denoise


# --------------------------------------------------------------------------- samplers
def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma."""
    return (x - denoised) / sigma


def _euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: Callable[[int], object],
           generator: Optional[torch.Generator]) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        callback(i)
    return x


def _euler_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: Callable[[int], object],
                     generator: Optional[torch.Generator]) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)
        sigma_up = min(float(sigma_next), float((sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5))
        sigma_down = float((sigma_next ** 2 - sigma_up ** 2) ** 0.5)
        x = x + _to_d(x, sigma, denoised) * (sigma_down - sigma)
        if sigma_next > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + noise * sigma_up
        callback(i)
    return x


def _heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: Callable[[int], object],
          generator: Optional[torch.Generator]) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)
        d = _to_d(x, sigma, denoised)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_euler = x + d * dt
            d_next = _to_d(x_euler, sigma_next, denoiser(x_euler, sigma_next))
            x = x + (d + d_next) / 2 * dt
        callback(i)
    return x


def _lms_coefficient(sigmas: np.ndarray, i: int, j: int, order: int) -> float:
    """Integral over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial for point i-j."""
    basis = np.polynomial.Polynomial([1.0])
    for k in range(order):
        if k != j:
            basis = basis * np.polynomial.Polynomial([-sigmas[i - k], 1.0]) / (sigmas[i - j] - sigmas[i - k])
    antiderivative = basis.integ()
    return float(antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i]))


def _lms(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: Callable[[int], object],
         generator: Optional[torch.Generator], order: int = 4) -> torch.Tensor:
    sigmas_np = sigmas.cpu().double().numpy()
    derivatives: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        derivatives.insert(0, _to_d(x, sigmas[i], denoised))
        del derivatives[order:]
        current_order = min(i + 1, order)
        coefficients = [_lms_coefficient(sigmas_np, i, j, current_order) for j in range(current_order)]
        x = x + sum(c * d for c, d in zip(coefficients, derivatives))
        callback(i)
    return x


def _dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: Callable[[int], object],
               generator: Optional[torch.Generator]) -> torch.Tensor:
    old_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            t, t_next = -math.log(float(sigma)), -math.log(float(sigma_next))
            h = t_next - t
            if old_denoised is None or sigmas[i + 1] == 0:
                estimate = denoised
            else:
                h_last = t + math.log(float(sigmas[i - 1]))
                r = h_last / h
                estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (float(sigma_next) / float(sigma)) * x - math.expm1(-h) * estimate
        old_denoised = denoised
        callback(i)
    return x


_ANCESTRAL = frozenset({"euler_ancestral"})
_SAMPLERS = {
    "euler": _euler,
    "ddim": _euler,
    "euler_ancestral": _euler_ancestral,
    "heun": _heun,
    "lms": _lms,
    "dpmpp_2m": _dpmpp_2m,
}


# --------------------------------------------------------------------------- the KSampler
def _joined(first: TextConditioning, second: TextConditioning) -> TextConditioning:
    """Two _prepared conditionings as one batch (positive first), for one batched UNet call."""
    if first.pooled is None and second.pooled is None:
        return TextConditioning(torch.cat([first.context, second.context]))
    if first.pooled is None or second.pooled is None:
        raise ValueError("positive and negative conditioning differ: only one of them has a pooled output")
    assert first.time_ids is not None and second.time_ids is not None, "_prepared gives time_ids with pooled"
    return TextConditioning(torch.cat([first.context, second.context]), torch.cat([first.pooled, second.pooled]),
                            torch.cat([first.time_ids, second.time_ids]))


def _guided_denoiser(denoiser_for: Callable[[TextConditioning], Denoiser], positive: TextConditioning,
                     negative: Optional[TextConditioning], cfg: float) -> Denoiser:
    """Classifier-free guidance: uncond + cfg * (cond - uncond), one batched UNet call
    when both contexts have the same length; cfg == 1 skips the unconditional pass. Each
    side keeps its own pooled output and size values (SDXL), as in ComfyUI."""
    if negative is None or cfg == 1.0:
        return denoiser_for(positive)
    if positive.context.shape[1:] == negative.context.shape[1:]:
        both = denoiser_for(_joined(positive, negative))

        def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            cond, uncond = both(torch.cat([x, x]), sigma).chunk(2)
            return uncond + cfg * (cond - uncond)
        return guided
    cond_denoiser, uncond_denoiser = denoiser_for(positive), denoiser_for(negative)

    def guided_separately(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        uncond = uncond_denoiser(x, sigma)
        return uncond + cfg * (cond_denoiser(x, sigma) - uncond)
    return guided_separately


def _prepared(conditioning: Conditioning, latent: torch.Tensor) -> TextConditioning:
    """`conditioning` batched like `latent`, in fp32; with a pooled output (SDXL), size values
    too: the given ones, else the latent's own size (8h, 8w, 0, 0, 8h, 8w) as ComfyUI fills them."""
    if not isinstance(conditioning, TextConditioning):
        conditioning = TextConditioning(conditioning)
    batch = latent.shape[0]
    context = batched(conditioning.context.float(), batch, "conditioning")
    if conditioning.pooled is None:
        return TextConditioning(context)
    time_ids = latent_time_ids(latent) if conditioning.time_ids is None else conditioning.time_ids
    return TextConditioning(context, batched(conditioning.pooled.float(), batch, "pooled"),
                            batched(time_ids.float().reshape(-1, SIZE_VALUES), batch, "time_ids"))


def _step_noise_generator(device: torch.device, seed: int) -> torch.Generator:
    """The generator for the noise ancestral samplers add at each step.

    ComfyUI draws it from its own generator on the latent's device, seeded with the seed
    (plus one on the CPU, so it does not repeat the initial noise); matching that makes
    euler_ancestral give ComfyUI's pictures for the same seed."""
    device = torch.device(device)
    offset = 1 if device.type == "cpu" else 0
    return torch.Generator(device=device).manual_seed((int(seed) + offset) & 0xFFFFFFFFFFFFFFFF)


def sample(model: Any,  # HeadlessModel-like: alphas_cumprod, latent_scale_factor, load_device, apply_model...
           latent: torch.Tensor, positive: Conditioning, negative: Optional[Conditioning], *,
           seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, denoise: float = 1.0,
           callback: Optional[StepCallback] = None) -> torch.Tensor:
    """Sample like ComfyUI's KSampler on a HeadlessModel-like `model`.

    `latent` and the result are raw (unscaled) VAE latents [B,4,h,w]; `positive`/`negative`
    are text contexts [1 or B, T, D], or TextConditionings: SDXL's carry the pooled output
    [1 or B, 1280] and the size values [6] or [1 or B, 6] (None: the latent's size), which reach
    `model.apply_model(x, t, context, pooled=..., time_ids=...)`; a plain context is passed as
    `model.apply_model(x, t, context)`. Noise comes from a CPU torch.Generator seeded with
    `seed` (as ComfyUI), so the same seed gives the same result on every run. With
    denoise < 1 sampling starts from `latent` noised to the first sigma of the tail."""
    if sampler_name not in _SAMPLERS:
        raise ValueError(f"unknown sampler {sampler_name!r}; choose one of {SAMPLER_NAMES}")
    schedule = DiscreteSchedule(model.alphas_cumprod)
    sigmas = sigmas_for_denoise(schedule, scheduler, steps, denoise)
    latent = latent.float()
    if len(sigmas) < 2:
        return latent.clone()
    generator = torch.Generator(device="cpu").manual_seed(int(seed) & 0xFFFFFFFFFFFFFFFF)
    noise = torch.randn(latent.shape, generator=generator, dtype=torch.float32)
    scale = model.latent_scale_factor
    sigma_start = float(sigmas[0])
    # A full-strength start treats the input as pure noise of unit variance in DDPM space.
    noise_scale = math.sqrt(1.0 + sigma_start ** 2) if math.isclose(sigma_start, schedule.sigma_max,
                                                                    rel_tol=1e-5) else sigma_start
    x = (latent * scale + noise * noise_scale).to(model.load_device)

    positive = _prepared(positive, latent)
    negative = _prepared(negative, latent) if negative is not None else None

    def denoiser_for(conditioning: TextConditioning) -> Denoiser:
        apply_model = model.apply_model
        if conditioning.pooled is not None:
            apply_model = functools.partial(apply_model, pooled=conditioning.pooled, time_ids=conditioning.time_ids)
        return make_denoiser(apply_model, schedule, model.prediction_type, conditioning.context)

    denoiser = _guided_denoiser(denoiser_for, positive, negative, float(cfg))
    total = len(sigmas) - 1
    sigmas = sigmas.to(torch.float32)
    # Only the ancestral sampler draws per-step noise (and a device without generators, such as the
    # `meta` stand-in the placement tests use, can still run the others).
    step_noise = _step_noise_generator(x.device, seed) if sampler_name in _ANCESTRAL else None
    result = _SAMPLERS[sampler_name](denoiser, x, sigmas, lambda i: callback and callback(i + 1, total), step_noise)
    return (result / scale).float().cpu()
