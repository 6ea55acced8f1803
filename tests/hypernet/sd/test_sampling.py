"""Sampler math against formulas written here from the published definitions."""
import math

import pytest
import torch

from hypernet_studio.hypernet.sd import sampling
from hypernet_studio.hypernet.sd.components import scaled_linear_alphas_cumprod
from hypernet_studio.hypernet.sd.sampling import sample


@pytest.fixture(scope="module")
def schedule():
    return sampling.DiscreteSchedule(scaled_linear_alphas_cumprod())


def test_sigma_table_and_timestep_round_trip(schedule):
    abar = scaled_linear_alphas_cumprod().double()
    torch.testing.assert_close(schedule.sigmas, ((1 - abar) / abar).sqrt())
    for t in (0.0, 1.0, 17.25, 500.0, 998.5, 999.0):
        sigma = schedule.sigma(torch.tensor(t))
        assert abs(float(schedule.timestep(sigma)) - t) < 1e-3


@pytest.mark.parametrize("scheduler", sampling.SCHEDULER_NAMES)
def test_schedules_decrease_to_zero(schedule, scheduler):
    sigmas = sampling.compute_sigmas(schedule, scheduler, 10)
    assert sigmas.shape == (11,) and sigmas[-1] == 0
    assert (sigmas[:-1] > sigmas[1:]).all()


def test_karras_and_normal_formulas(schedule):
    steps, rho = 6, 7.0
    lo, hi = schedule.sigma_min, schedule.sigma_max
    expected = [(hi ** (1 / rho) + i / (steps - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(steps)]
    torch.testing.assert_close(sampling.compute_sigmas(schedule, "karras", steps)[:-1],
                               torch.tensor(expected, dtype=torch.float64))
    normal = sampling.compute_sigmas(schedule, "normal", steps)
    assert math.isclose(float(normal[0]), hi, rel_tol=1e-6) and math.isclose(float(normal[-2]), lo, rel_tol=1e-6)
    ddim_uniform = sampling.compute_sigmas(schedule, "ddim_uniform", 7)  # stride 142: indices 1, 143, ..., 995
    torch.testing.assert_close(ddim_uniform[:-1], schedule.sigmas[list(range(995, 0, -142))])
    simple = sampling.compute_sigmas(schedule, "simple", 4)
    torch.testing.assert_close(simple[:-1], schedule.sigmas[[999, 749, 499, 249]])


def test_denoise_uses_the_tail_of_a_longer_schedule(schedule):
    tail = sampling.sigmas_for_denoise(schedule, "karras", 4, 0.5)
    torch.testing.assert_close(tail, sampling.compute_sigmas(schedule, "karras", 8)[-5:])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoiser_recovers_x0_from_an_exact_model(schedule, prediction_type):
    """A model that knows the true noise must make the denoiser return the clean latent."""
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 3, 3, generator=generator)
    noise = torch.randn(2, 4, 3, 3, generator=generator)
    sigma = torch.tensor(3.7)
    x = x0 + sigma * noise

    def exact_model(x_in, timesteps, context):
        assert torch.allclose(schedule.sigma(timesteps).float(), sigma.expand(2), rtol=1e-4)
        abar = 1.0 / (1.0 + sigma ** 2)  # x_in = sqrt(abar) x0 + sqrt(1 - abar) eps
        torch.testing.assert_close(x_in, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
        if prediction_type == "epsilon":
            return noise
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0

    denoiser = sampling.make_denoiser(exact_model, schedule, prediction_type, context=torch.zeros(2, 1, 1))
    torch.testing.assert_close(denoiser(x, sigma), x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", sampling.SAMPLER_NAMES)
def test_samplers_land_on_a_constant_denoiser_target(schedule, sampler):
    """If every step predicts the same clean latent, every sampler must end exactly there."""
    target = torch.full((1, 4, 2, 2), 0.25)
    sigmas = sampling.compute_sigmas(schedule, "karras", 5).float()
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    steps = []
    out = sampling._SAMPLERS[sampler](lambda x, s: target, x, sigmas, steps.append,
                                      torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, target, rtol=1e-4, atol=1e-4)
    assert steps == list(range(5))


def test_euler_step_matches_the_ode_formula(schedule):
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    x = torch.ones(1, 1, 1, 1)
    out = sampling._euler(lambda x, s: x * 0.5, x, sigmas, lambda i: None, None)
    # step 1: d = (x - x/2)/2 = 0.25 -> x = 1 - 0.25 = 0.75; step 2: d = 0.375 -> x = 0.75 - 0.375
    torch.testing.assert_close(out, torch.full((1, 1, 1, 1), 0.375))


def test_lms_coefficients_integrate_polynomials_exactly():
    import numpy as np

    sigmas = np.array([5.0, 3.0, 2.0, 1.2, 0.5])
    i, order = 3, 4
    coefficients = [sampling._lms_coefficient(sigmas, i, j, order) for j in range(order)]
    # A cubic through the last four points is integrated exactly by the multistep weights.
    cubic = lambda s: s ** 3 - 2 * s + 1
    values = [cubic(sigmas[i - j]) for j in range(order)]
    def antiderivative(s):
        return s ** 4 / 4 - s ** 2 + s

    exact = antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i])
    assert math.isclose(sum(c * v for c, v in zip(coefficients, values)), exact, rel_tol=1e-9)


def _diffusers_reference(scheduler, components, positive, negative, noise, steps, cfg):
    """The textbook diffusers loop: scale the input, one batched cfg UNet call, scheduler.step."""
    scheduler.set_timesteps(steps)
    # ComfyUI (and so our sampler) starts a full denoise from the unit-variance DDPM x_T, which
    # in sigma space (Euler) is noise * sqrt(1 + sigma_max^2) -- diffusers' linspace default uses
    # noise * sigma_max there -- and in the VP space DPM-Solver works in (init_noise_sigma 1) is noise.
    sigma_space = float(scheduler.init_noise_sigma) != 1.0
    x = noise * (scheduler.sigmas.max() ** 2 + 1) ** 0.5 if sigma_space else noise
    contexts = torch.cat([positive, negative])
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(torch.cat([x, x]), t)
        cond, uncond = components.unet(x_in, t, encoder_hidden_states=contexts).sample.chunk(2)
        x = scheduler.step(uncond + cfg * (cond - uncond), t, x).prev_sample
    return x


class _RoundedTimesteps:
    """A model view that calls the UNet at integer timesteps."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def apply_model(self, x, timesteps, context):
        return self.model.apply_model(x, timesteps.round(), context)


# (diffusers' LMSDiscreteScheduler needs scipy, which is not a dependency; the LMS weights are
# checked against exact polynomial integrals above instead.)
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers
@pytest.mark.parametrize("sampler, peer", [("euler", "EulerDiscreteScheduler"), ("heun", "HeunDiscreteScheduler"),
                                           ("dpmpp_2m", "DPMSolverMultistepScheduler")])
def test_karras_sampling_matches_diffusers_schedulers(sampler, peer):
    """Same UNet, same noise, same Karras sigmas: our loop must land where diffusers' does."""
    import diffusers

    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    components = build_tiny_components()
    model, clip, _ = headless_objects(components)
    options = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, use_karras_sigmas=True)
    if peer == "DPMSolverMultistepScheduler":
        options.update(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    scheduler = getattr(diffusers, peer)(**options)
    steps, cfg, seed = 5, 6.0, 11
    if peer == "DPMSolverMultistepScheduler":
        model = _RoundedTimesteps(model)  # diffusers' DPM-Solver evaluates at rounded Karras timesteps
    with torch.inference_mode():
        positive = clip.encode_from_tokens(clip.tokenize("a lighthouse"))
        negative = clip.encode_from_tokens(clip.tokenize(""))
        ours = sample(model, torch.zeros(1, 4, 4, 4), positive, negative, seed=seed, steps=steps, cfg=cfg,
                      sampler_name=sampler, scheduler="karras")
        noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(seed))
        reference = _diffusers_reference(scheduler, components, positive, negative, noise, steps, cfg)
    torch.testing.assert_close(ours * components.latent_scale_factor, reference, rtol=1e-4, atol=1e-4)
