"""Headless sampling keeps every tensor of a step on the model's device.

This machine has no GPU, so the `meta` device stands in for one: torch raises when a CPU tensor
(other than a 0-dim one) meets a meta tensor in an op, as it does for a CPU tensor meeting a CUDA
one. Meta ops compute nothing, so only placement is checked; the one thing meta cannot do is copy
its (absent) values back to the host, which sample() does last."""
import pytest
import torch

from hypernet_studio.hypernet.sd import sampling
from hypernet_studio.hypernet.sd.components import scaled_linear_alphas_cumprod
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.tiny import build_tiny_components
from hypernet_studio.hypernet.sd.tiny_sdxl import build_tiny_sdxl_components


def test_a_cpu_tensor_meeting_a_meta_tensor_raises_as_on_a_gpu():
    """The premise of these tests: were it false, they could not catch a device mix."""
    with pytest.raises(RuntimeError, match="device"):
        _ = torch.ones(3) + torch.ones(3, device="meta")


def test_timestep_computes_on_the_sigmas_device():
    schedule = sampling.DiscreteSchedule(scaled_linear_alphas_cumprod())
    timesteps = schedule.timestep(torch.tensor([14.6, 0.03], device="meta"))
    assert timesteps.device.type == "meta" and timesteps.shape == (2,)
    cpu = schedule.timestep(torch.tensor([14.6, 0.03]))
    assert cpu.device.type == "cpu" and float(cpu[0]) > float(cpu[1])


@pytest.mark.parametrize("build", [build_tiny_components, build_tiny_sdxl_components], ids=["sd1", "sdxl"])
@pytest.mark.parametrize("sampler_name", ["euler", "heun", "lms", "dpmpp_2m"])
def test_every_sampling_step_runs_on_the_models_device(build, sampler_name):
    """Guided sampling (both halves in one batch, SDXL's pooled output and size values too) runs
    every step with the UNet on the stand-in device; only the final copy to the host fails."""
    cpu_model, clip, _ = headless_objects(build(seed=0))
    uses_pooled = cpu_model.uses_added_conditioning
    encode = clip.encode_conditioning if uses_pooled else clip.encode_texts
    positive, negative = encode(["a cat"]), encode([""])
    model, _, _ = headless_objects(build(seed=0, device="meta"))
    assert model.load_device.type == "meta"
    done = []
    with pytest.raises(NotImplementedError, match="meta tensor"):
        sampling.sample(model, torch.zeros(1, 4, 8, 8), positive, negative, seed=1, steps=3, cfg=4.0,
                        sampler_name=sampler_name, scheduler="karras", callback=lambda i, total: done.append(i))
    assert done == [1, 2, 3]


def test_sdxl_size_values_are_built_once_per_latent_size_and_device():
    """Built per UNet call, the CPU-made size values would be copied to the GPU every micro-batch."""
    from hypernet_studio.hypernet.sd import headless

    model, clip, _ = headless_objects(build_tiny_sdxl_components(seed=0, device="meta"))
    cond = headless_objects(build_tiny_sdxl_components(seed=0))[1].encode_conditioning(["a cat"])
    headless._latent_time_ids_on.cache_clear()
    for _ in range(3):
        model.apply_model(torch.zeros(1, 4, 8, 8, device="meta"), torch.tensor([10]), cond.context, pooled=cond.pooled)
    info = headless._latent_time_ids_on.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    assert headless._latent_time_ids_on((8, 8), torch.device("meta")).device.type == "meta"
