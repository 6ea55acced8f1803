"""The built-in tiny SDXL model and SDXL conditioning on it: text (penultimate hidden states of
CLIP-L and OpenCLIP-G side by side, OpenCLIP-G's projected pooled output at the first end token),
the six size values embedded as SDXL does (Podell et al. 2023, "micro-conditioning"), and
sampling with both through classifier-free guidance."""
import math

import pytest
import torch
import torch.nn.functional as F

from hypernet_studio.hypernet.sd import tiny_sdxl
from hypernet_studio.hypernet.sd.components import TextConditioning
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.sampling import sample
from hypernet_studio.hypernet.sd.sdxl import size_time_ids


@pytest.fixture(scope="module")
def components():
    return tiny_sdxl.build_tiny_sdxl_components()


@pytest.fixture(scope="module")
def objects(components):
    return headless_objects(components)


def test_build_is_bit_identical_cached_and_leaves_the_global_rng(components):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = tiny_sdxl._build(0)
    torch.testing.assert_close(torch.rand(3), expected)
    for name in components.module_names():
        a, b = getattr(components, name).state_dict(), getattr(again, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert tiny_sdxl.build_tiny_sdxl_components(0) is components
    assert not any(p.requires_grad or p.is_inference() for p in components.unet.parameters())


def test_it_has_sdxl_widths_and_conditioning(components, objects):
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.spec import FAMILY_SIZES, HypernetSpec

    model, clip, _ = objects
    assert components.is_sdxl and components.family == "tiny-sdxl" and components.default_clip_layer == -2
    assert (components.latent_scale_factor, components.vae.config.scaling_factor) == (0.13025, 0.13025)
    assert model.attention_widths() == sorted(FAMILY_SIZES["SDXL"]) == [640, 1280, 2048]
    heads = {(m.to_q.in_features, m.heads) for name, m in components.unet.named_modules() if name.endswith("attn1")}
    assert heads == {(640, 10), (1280, 20)}  # 64 channels per head, as in SDXL
    config = components.unet.config
    assert (config.addition_embed_type, config.projection_class_embeddings_input_dim) == ("text_time", 2816)
    assert components.unet.time_embedding.linear_2.out_features == 1280
    hypernetwork = Hypernetwork.build(HypernetSpec(sizes=None), sizes=model.attention_widths(), seed=0)
    assert sorted(hypernetwork.sizes) == [640, 1280, 2048]
    parameters = sum(p.numel() for name in components.module_names() for p in getattr(components, name).parameters())
    assert parameters < 360e6  # about 355 M: the 640/1280-wide UNet is most of it


def _first_end(ids, end):
    return int((ids[0] == end).nonzero()[0])


def test_text_conditioning_follows_the_sdxl_scheme(components, objects):
    _, clip, _ = objects
    tokens = clip.tokenize("a red fox")
    tokenizer = components.tokenizer
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    body = tokenizer("a red fox", add_special_tokens=False)["input_ids"]
    ids_l = torch.tensor([[start] + body + [end] * (76 - len(body))])  # CLIP-L pads with the end token
    ids_g = torch.tensor([[start] + body + [end] + [0] * (75 - len(body))])  # OpenCLIP-G with id 0
    assert torch.equal(tokens["l"]["input_ids"], ids_l) and torch.equal(tokens["g"]["input_ids"], ids_g)
    with torch.no_grad():
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        l_out = components.text_encoder(ids_l, output_hidden_states=True)
        g_out = components.text_encoder_2(ids_g, output_hidden_states=True)
        # Penultimate block outputs, no final LayerNorm, [CLIP-L | OpenCLIP-G] on the channel axis.
        expected = torch.cat([l_out.hidden_states[-2], g_out.hidden_states[-2]], dim=-1)
        # Pooled: final LayerNorm of the last block at the first end token, times the projection.
        g_model = components.text_encoder_2.text_model
        last = g_model.final_layer_norm(g_out.hidden_states[-1])[0, _first_end(ids_g, end)]
        expected_pooled = last @ components.text_encoder_2.text_projection.weight.T
    assert cond.shape == (1, 77, 2048) and pooled.shape == (1, 1280)
    torch.testing.assert_close(cond, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    torch.testing.assert_close(pooled[0], expected_pooled, rtol=1e-5, atol=1e-5 * float(expected_pooled.abs().max()))


def _size_embedding(value, dim=256):
    """SDXL's embedding of one size value: [cos(v f_i)] ++ [sin(v f_i)], f_i = 10000^(-i / (dim/2))."""
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    return torch.cat([torch.cos(value * frequencies), torch.sin(value * frequencies)])


def test_size_values_are_embedded_after_the_pooled_output(components, objects):
    model = objects[0]
    seen = []
    hook = components.unet.add_embedding.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    pooled = torch.randn(1, 1280, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 2048, generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            ids = size_time_ids(width=1024, height=768, crop_w=32, crop_h=16, target_width=896, target_height=1152)
            model.apply_model(torch.zeros(1, 4, 4, 4), torch.tensor([500.0]), context, pooled=pooled, time_ids=ids)
            model.apply_model(torch.zeros(1, 4, 4, 6), torch.tensor([500.0]), context, pooled=pooled)
    finally:
        hook.remove()
    # ComfyUI's order: height, width, crop_h, crop_w, target_height, target_width.
    for values, y in zip([(768, 1024, 16, 32, 1152, 896), (32, 48, 0, 0, 32, 48)], seen):
        assert y.shape == (1, 2816)
        assert torch.equal(y[:, :1280], pooled)
        expected = torch.cat([_size_embedding(v) for v in values])
        # sin/cos of fp32 arguments: off by up to a few ulps of the largest argument (the value itself).
        tolerance = 4 * max(values) * torch.finfo(torch.float32).eps
        torch.testing.assert_close(y[0, 1280:].double(), expected, rtol=0, atol=tolerance)


def test_sdxl_models_need_the_pooled_output(objects):
    model = objects[0]
    with pytest.raises(ValueError, match="SDXL model: apply_model needs `pooled`"):
        model.apply_model(torch.zeros(1, 4, 4, 4), torch.tensor([1.0]), torch.zeros(1, 77, 2048))


@pytest.fixture(scope="module")
def prompts(objects):
    clip = objects[1]
    with torch.no_grad():
        return [TextConditioning(*clip.encode_from_tokens(clip.tokenize(text), return_pooled=True))
                for text in ("a lighthouse at dusk", "")]


def _sample(model, positive, negative, seed, steps=1):
    with torch.no_grad():
        return sample(model, torch.zeros(1, 4, 4, 4), positive, negative, seed=seed, steps=steps, cfg=5.0,
                      sampler_name="euler", scheduler="normal")


def test_sampling_is_deterministic_and_follows_the_size_values(objects, prompts):
    model = objects[0]
    positive, negative = prompts
    first, again = _sample(model, positive, negative, seed=3), _sample(model, positive, negative, seed=3)
    assert torch.equal(first, again)
    as_cropped = TextConditioning(positive.context, positive.pooled, size_time_ids(1024, 1024, 256, 256))
    cropped = _sample(model, as_cropped, negative, seed=3)
    assert not torch.allclose(first, cropped, rtol=0, atol=1e-3)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers
def test_guidance_matches_a_diffusers_euler_loop_with_added_conditioning(components, objects, prompts):
    """The textbook loop: one batched CFG call with each side's pooled output and size values."""
    from diffusers import EulerDiscreteScheduler

    model = objects[0]
    positive, negative = prompts
    positive = TextConditioning(positive.context, positive.pooled, size_time_ids(1024, 768, 0, 64))
    steps, cfg, seed = 2, 5.0, 3
    ours = _sample(model, positive, negative, seed=seed, steps=steps)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       timestep_spacing="linspace")
    scheduler.set_timesteps(steps)
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(seed))
    x = noise * (scheduler.sigmas.max() ** 2 + 1) ** 0.5  # ComfyUI's full-denoise start (see test_sampling.py)
    added = {"text_embeds": torch.cat([positive.pooled, negative.pooled]),
             "time_ids": torch.stack([positive.time_ids, size_time_ids(32, 32)])}
    contexts = torch.cat([positive.context, negative.context])
    with torch.no_grad():
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(torch.cat([x, x]), t)
            cond, uncond = components.unet(x_in, t, encoder_hidden_states=contexts,
                                           added_cond_kwargs=added).sample.chunk(2)
            x = scheduler.step(uncond + cfg * (cond - uncond), t, x).prev_sample
    torch.testing.assert_close(ours * components.latent_scale_factor, x, rtol=1e-4, atol=1e-4 * float(x.abs().max()))


def test_training_encoder_returns_context_and_pooled(components, objects):
    _, clip, _ = objects
    with torch.no_grad():
        batch = clip.encode_conditioning(["a cat", "a dog"])
        single = clip.encode_from_tokens(clip.tokenize("a dog"), return_pooled=True)
    assert batch.context.shape == (2, 77, 2048) and batch.pooled.shape == (2, 1280) and batch.time_ids is None
    torch.testing.assert_close(batch.context[1:], single[0])
    torch.testing.assert_close(batch.pooled[1:], single[1])
    assert torch.equal(clip.encode_texts(["a cat"]), batch.context[:1])


def test_a_hypernetwork_trains_through_the_model(objects, prompts):
    """Every width of an SDXL hypernetwork (640, 1280 and the 2048 context) gets a gradient."""
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.patch import apply_hypernetwork
    from hypernet_studio.hypernet.spec import HypernetSpec

    model = objects[0]
    positive = prompts[0]
    hypernetwork = Hypernetwork.build(HypernetSpec(sizes=None), sizes=model.attention_widths(), seed=0)
    hypernetwork.train().requires_grad_(True)
    patched = apply_hypernetwork(model, hypernetwork)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    out = patched.apply_model(x, torch.tensor([400.0]), positive.context, pooled=positive.pooled,
                              time_ids=size_time_ids(32, 32))
    F.mse_loss(out, torch.zeros_like(out)).backward()
    for width, (k_module, v_module) in hypernetwork.layers.items():
        for module in (k_module, v_module):
            gradients = [p.grad for p in module.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in gradients), width
            assert sum(float(g.abs().sum()) for g in gradients) > 0, width
