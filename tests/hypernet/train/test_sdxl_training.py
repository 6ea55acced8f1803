"""Training on the built-in tiny SDXL model (headless): one step against reference math written
from SDXL's conditioning scheme, the context module once per UNet call (also under gradient
checkpointing), exact resume, and NaN and interrupt handling as for SD1."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.patch import apply_hypernetwork
from hypernet_studio.hypernet.sd import tiny_sdxl
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
from hypernet_studio.hypernet.train.batches import BatchPlan, prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig, TrainHooks, TrainingDiverged
from hypernet_studio.hypernet.train.random_draws import generator
from hypernet_studio.hypernet.train.run import train_hypernetwork

PIXELS = 32  # a 4x4 latent: SDXL's layout at the smallest size its two levels allow
CAPTIONS = ["red, square", "blue, circle"]


@pytest.fixture(scope="module")
def objects():
    return headless_objects(tiny_sdxl.build_tiny_sdxl_components())


def _examples():
    pictures = torch.rand(2, PIXELS, PIXELS, 3, generator=torch.Generator().manual_seed(5))
    return prepare_examples([p[None] for p in pictures], CAPTIONS, resolution=PIXELS, multiple=32)


def _network(model):
    # A narrow middle layer keeps the step files small (a 1,2,1 network on SDXL's widths is 190 MiB).
    spec = HypernetSpec(layer_structure=[1, 0.25, 1], activation="relu", weight_init="XavierNormal", sizes=None)
    return Hypernetwork.build(spec, sizes=model.attention_widths(), seed=0, name="xl")


def _config(tmp_path=None, **overrides):
    values = dict(name="xl", steps=1, learning_rate="0.05", optimizer="SGD", seed=3, csv_every=0, save_every=0,
                  preview_every=0, latent_sampling="deterministic", batch_size=1, resolution=PIXELS,
                  templates=["[filewords]"])
    if tmp_path is not None:
        values.update(log_dir=tmp_path / "log", final_path=tmp_path / "xl.pt")
    values.update(overrides)
    return TrainConfig(**values)


def _flat(network):
    return torch.cat([p.detach().flatten() for p in network.parameters()])


def test_a_step_matches_reference_math_with_pooled_and_size_conditioning(objects):
    model, clip, vae = objects
    network = _network(model)
    reference = network.copy().train().requires_grad_(True)
    result = train_hypernetwork(DiffusersBackend(model, clip, vae), network, _examples(), _config())
    assert sorted(network.sizes) == [640, 1280, 2048]

    # Reference: SD's epsilon objective; SDXL conditions the UNet on the two encoders' penultimate
    # states (context 2048), OpenCLIP-G's pooled output, and six size values in the order
    # (height, width, crop top, crop left, target height, target width): a plain text encode's
    # defaults are the picture's own size and no crop.
    (index,) = BatchPlan([(PIXELS, PIXELS)] * 2, 1, 1, seed=3).batch(0)
    components = model.components
    pixels = _examples()[index].pixels.movedim(-1, 1) * 2 - 1
    with torch.no_grad():
        x0 = components.vae.encode(pixels).latent_dist.mean * 0.13025
        cond = clip.encode_conditioning([CAPTIONS[index]])
    draws = generator(3, "noise", 0, 0)
    t = torch.randint(0, 1000, (1,), generator=draws)
    eps = torch.randn(x0.shape, generator=draws)
    a = components.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    sizes = torch.tensor([[PIXELS, PIXELS, 0, 0, PIXELS, PIXELS]], dtype=torch.float32)
    assert cond.context.shape[-1] == 2048 and cond.pooled.shape == (1, 1280)
    patched = apply_hypernetwork(model, reference, 1.0)
    loss = F.mse_loss(patched.apply_model(x_t, t, cond.context, pooled=cond.pooled, time_ids=sizes), eps)
    loss.backward()
    assert result.losses == [pytest.approx(float(loss.detach()), rel=1e-4)]
    with torch.no_grad():
        expected = torch.cat([(p - 0.05 * p.grad).flatten() for p in reference.parameters()])
    assert not torch.equal(expected, _flat(reference)), "the step changes the weights"
    scale = float(expected.abs().max())
    torch.testing.assert_close(_flat(network), expected, rtol=1e-4, atol=1e-5 * scale)


def test_context_module_runs_once_per_unet_call_also_under_checkpointing(objects):
    model, clip, vae = objects
    results = {}
    for checkpointing in (False, True):
        network = _network(model)
        calls = []
        network.layers[2048][0].register_forward_hook(lambda *args, calls=calls: calls.append(1))
        config = _config(steps=2, gradient_checkpointing=checkpointing)
        train_hypernetwork(DiffusersBackend(model, clip, vae), network, _examples(), config)
        results[checkpointing] = _flat(network)
        assert len(calls) == 2, (checkpointing, len(calls))  # two steps, one UNet call each
    torch.testing.assert_close(results[True], results[False], rtol=1e-5, atol=1e-6)


def test_resume_is_exact(objects, tmp_path):
    model, clip, vae = objects
    unbroken = _network(model)
    train_hypernetwork(DiffusersBackend(model, clip, vae), unbroken, _examples(),
                       _config(tmp_path / "unbroken", steps=3, optimizer="AdamW", learning_rate="0.001"))
    first = _network(model)
    train_hypernetwork(DiffusersBackend(model, clip, vae), first, _examples(),
                       _config(tmp_path / "split", steps=2, optimizer="AdamW", learning_rate="0.001", save_every=2))
    resumed = load_hypernetwork(tmp_path / "split" / "log" / "xl-2.pt")
    train_hypernetwork(DiffusersBackend(model, clip, vae), resumed, _examples(),
                       _config(tmp_path / "split", steps=3, optimizer="AdamW", learning_rate="0.001"))
    assert resumed.step == 3
    torch.testing.assert_close(_flat(resumed), _flat(unbroken), rtol=0, atol=0)


class _NanAfter(DiffusersBackend):
    def __init__(self, *objects, calls):
        super().__init__(*objects)
        self.calls_left = calls

    def predict(self, x_t, timesteps, cond):
        self.calls_left -= 1
        out = super().predict(x_t, timesteps, cond)
        return out * float("nan") if self.calls_left < 0 else out


def test_nan_stops_with_the_last_good_file_and_interrupt_saves(objects, tmp_path):
    model, clip, vae = objects
    with pytest.raises(TrainingDiverged, match="step 2") as error:
        train_hypernetwork(_NanAfter(model, clip, vae, calls=1), _network(model), _examples(),
                           _config(tmp_path / "nan", steps=3, save_every=1))
    assert error.value.last_good_path == tmp_path / "nan" / "log" / "xl-1.pt" and error.value.last_good_path.is_file()

    class StopAfterFirst(TrainHooks):
        def should_stop(self):
            return True

    result = train_hypernetwork(DiffusersBackend(model, clip, vae), _network(model), _examples(),
                                _config(tmp_path / "stop", steps=3), StopAfterFirst())
    assert result.interrupted and result.hypernetwork.step == 1
    assert load_hypernetwork(tmp_path / "stop" / "xl.pt").step == 1
    assert (tmp_path / "stop" / "log" / "xl-1.pt").is_file()
