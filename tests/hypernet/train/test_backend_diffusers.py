"""The headless backend on the built-in tiny model."""
import pytest
import torch

from hypernet_studio.hypernet.models.headless import headless_objects
from hypernet_studio.hypernet.models.tiny import build_tiny_components
from hypernet_studio.hypernet.module import Hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
from hypernet_studio.hypernet.train.data import prepare_examples
from hypernet_studio.hypernet.train.loop import TrainConfig, train_hypernetwork

from .fakes import tiny_dataset


@pytest.fixture(scope="module")
def tiny():
    return headless_objects(build_tiny_components(seed=0))


def _network(backend):
    spec = HypernetSpec(activation="relu", weight_init="XavierNormal", sizes=None, dropout_structure=[0, 0.1, 0])
    return Hypernetwork.build(spec, sizes=backend.attention_widths(), seed=1, name="tiny")


def _train(tiny, **overrides):
    model, clip, vae = tiny
    backend = DiffusersBackend(model, clip, vae)
    images, captions = tiny_dataset(2, size=64)
    examples = prepare_examples(images, captions, resolution=64)
    values = dict(name="tiny", steps=3, learning_rate="0.001", seed=3, templates=["a [filewords]"], csv_every=0)
    values.update(overrides)
    network = _network(backend)
    before = [p.detach().clone() for p in network.parameters()]
    result = train_hypernetwork(backend, network, examples, TrainConfig(**values))
    return result, before


def test_trains_on_the_tiny_model_without_touching_the_shared_model(tiny):
    model, _, _ = tiny
    result, before = _train(tiny)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    after = list(result.hypernetwork.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert model.patches("attn1_patch") == [] and model.patches("attn2_patch") == []
    assert not any(p.requires_grad for p in model.unet.parameters())


def test_gradient_checkpointing_keeps_the_patches_in_the_recomputation(tiny):
    plain, _ = _train(tiny, optimizer="SGD")
    checkpointed, _ = _train(tiny, optimizer="SGD", gradient_checkpointing=True)
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-5)
    for a, b in zip(checkpointed.hypernetwork.parameters(), plain.hypernetwork.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert "forward" not in tiny[0].unet.down_blocks[0].__dict__


def test_bf16_autocast_keeps_fp32_master_weights_and_previews_decode(tiny, tmp_path):
    result, _ = _train(tiny, precision="bf16", preview_every=3, preview_steps=2, log_dir=tmp_path)
    assert all(p.dtype == torch.float32 for p in result.hypernetwork.parameters())
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert result.previews[0].shape == (1, 64, 64, 3)
