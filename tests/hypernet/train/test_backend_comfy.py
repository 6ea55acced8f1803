"""The ComfyUI backend against a stand-in that follows ComfyUI's documented contract."""
import pytest
import torch

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.sd.components import scaled_linear_alphas_cumprod
from hypernet_studio.hypernet.train.backend_comfy import ComfyBackend
from hypernet_studio.hypernet.train.run import train_hypernetwork

from .fake_comfy import POOLED, V_PREDICTION, comfy_objects, comfy_sdxl_objects
from .fakes import FakeBackend
from .test_run import _config, _examples, _network
from .test_run import _params as _params_of


def test_schedule_comes_from_model_sampling_sigmas():
    backend = ComfyBackend(*comfy_objects())
    schedule = backend.schedule()
    assert schedule.prediction_type == "epsilon"
    assert torch.allclose(schedule.alphas_cumprod, scaled_linear_alphas_cumprod(), rtol=1e-5, atol=1e-7)
    assert ComfyBackend(*comfy_objects(V_PREDICTION)).schedule().prediction_type == "v_prediction"


def test_training_through_the_model_patcher_equals_training_the_unet_directly():
    model, clip, vae = comfy_objects()
    loaded = []
    backend = ComfyBackend(model, clip, vae, load_model=lambda patcher, memory: loaded.append(patcher))
    direct = FakeBackend()
    direct.unet.load_state_dict(model.model.diffusion_model.state_dict())
    # SGD: the update is the gradient times the rate, so the two paths' rounding stays at fp32
    # size (Adam divides by sqrt(v) and turns a 1e-9 difference in a near-zero gradient into
    # a full-size step).
    config = _config(steps=4, batch_size=2, optimizer="SGD", learning_rate="0.05")
    via_comfy = train_hypernetwork(backend, _network(), _examples(4), config)
    reference = train_hypernetwork(direct, _network(), _examples(4), config)
    assert via_comfy.losses == pytest.approx(reference.losses, rel=1e-5)
    trained, expected = (torch.cat([p.flatten() for p in result.hypernetwork.parameters()])
                         for result in (via_comfy, reference))
    assert not torch.equal(trained, _params_of(_network())), "training changed the weights"
    torch.testing.assert_close(trained, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    # The caller's patcher is untouched; the trained clone was handed to the loading hook.
    assert "patches" not in model.model_options["transformer_options"]
    assert len(loaded) == 1 and loaded[0] is not model
    assert len(loaded[0].model_options["transformer_options"]["patches"]["attn2_patch"]) == 1
    assert all(p.requires_grad for p in model.model.diffusion_model.parameters())


def test_checkpointing_blocks_give_the_same_gradients():
    model, clip, vae = comfy_objects()
    unet = model.model.diffusion_model
    unet.input_blocks = torch.nn.ModuleList([unet.conv_in])
    plain = train_hypernetwork(ComfyBackend(model, clip, vae), _network(), _examples(2), _config(steps=2))
    checkpointed = train_hypernetwork(ComfyBackend(model, clip, vae), _network(), _examples(2),
                                      _config(steps=2, gradient_checkpointing=True))
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-6)
    assert "forward" not in unet.conv_in.__dict__


def test_sdxl_trains_on_comfyuis_pooled_output_and_size_values():
    """The pooled output comes from ComfyUI's CLIP (return_pooled) and the UNet's `y` from the
    model's own encode_adm, asked for the picture's size, no crop: what ComfyUI's sampler asks
    for a plain text encode. The loss is the reference loss with that `y`."""
    model, clip, vae = comfy_sdxl_objects()
    backend = ComfyBackend(model, clip, vae)
    assert backend.schedule().prediction_type == "epsilon" and backend.uses_pooled
    config = _config(steps=1, batch_size=2, optimizer="SGD", learning_rate="0.05")
    network = _network()
    reference_net = network.copy().train().requires_grad_(True)
    result = train_hypernetwork(backend, network, _examples(4), config)
    side = 16  # the 16 px pictures give 2x2 latents here: 2 * 8 = 16
    assert model.model.adm_calls == [dict(width=side, height=side, crop_w=0, crop_h=0, target_width=side,
                                          target_height=side)]
    unet = model.model.diffusion_model
    (y,) = unet.seen_y
    assert y.shape == (2, POOLED + 6)
    torch.testing.assert_close(y[:, POOLED:], torch.tensor([[side, side, 0, 0, side, side]] * 2) / 100.0)

    # Reference: the same batch through the stand-in UNet with y built from the CLIP's pooled output.
    from hypernet_studio.hypernet.patch import HypernetPatch
    from hypernet_studio.hypernet.train.batches import BatchPlan
    from hypernet_studio.hypernet.train.random_draws import generator

    examples = _examples(4)
    indices = BatchPlan([e.size for e in examples], 2, 1, seed=7).batch(0)
    x0 = torch.cat([vae.encode(examples[i].pixels) * 0.5 for i in indices])
    contexts, pooled = zip(*(clip.encode_from_tokens(clip.tokenize(examples[i].caption), return_pooled=True)
                             for i in indices))
    draws = [generator(7, "noise", 0, position) for position in range(2)]
    t = torch.cat([torch.randint(0, 1000, (1,), generator=g) for g in draws])
    eps = torch.cat([torch.randn((1, *x0.shape[1:]), generator=g) for g in draws])
    a = backend.schedule().alphas_cumprod[t].view(-1, 1, 1, 1)
    patch = HypernetPatch([(reference_net, 1.0)])
    y_ref = torch.cat([torch.cat(pooled), torch.tensor([[side, side, 0, 0, side, side]] * 2) / 100.0], dim=1)
    prediction = unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t.float(), context=torch.cat(contexts), y=y_ref,
                      transformer_options={"patches": {"attn1_patch": [patch], "attn2_patch": [patch]}})
    loss = ((prediction - eps) ** 2).mean()
    assert result.losses == [pytest.approx(float(loss.detach()), rel=1e-5)]


@pytest.mark.parametrize("change, message", [("refiner", "needs conditioning other than text"),
                                             ("inpaint", "9 input channels")])
def test_refiners_and_inpainting_unets_are_refused_clearly(change, message):
    model, clip, vae = comfy_objects()
    if change == "refiner":  # an SDXL refiner: extra inputs, but not ComfyUI's SDXL class
        model.model.diffusion_model.num_classes = "sequential"
    else:
        model.model.diffusion_model.in_channels = 9
    with pytest.raises(ValueError, match=message):
        ComfyBackend(model, clip, vae).schedule()


def test_a_model_without_the_patcher_api_is_refused():
    with pytest.raises(InputError, match="has no clone") as caught:
        ComfyBackend(object(), None, None)
    assert caught.value.input_name == "model"


def test_prompts_of_different_lengths_are_padded_like_a1111():
    model, clip, vae = comfy_objects()
    long_prompt = "x " * 100

    def encode_from_tokens(tokens, return_pooled=False):
        length = 10 if tokens["text"] == long_prompt else 5
        return torch.arange(length * 12, dtype=torch.float32).reshape(1, length, 12)

    clip.encode_from_tokens = encode_from_tokens
    from hypernet_studio.hypernet.train.latents import TextCache

    cache = TextCache(ComfyBackend(model, clip, vae).encode_texts, torch.device("cpu"))
    batch = cache.batch(["short", long_prompt])
    assert batch.shape == (2, 10, 12)
    assert torch.equal(batch[0, 5:], batch[0, 4:5].expand(5, 12))
