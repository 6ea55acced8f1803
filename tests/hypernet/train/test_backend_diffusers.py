"""The headless backend on the built-in tiny model."""
import pytest
import torch

from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.tiny import build_tiny_components
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig
from hypernet_studio.hypernet.train.run import train_hypernetwork

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
    values = dict(name="tiny", steps=3, learning_rate="0.001", seed=3, templates=["a [filewords]"], csv_every=0,
                  save_every=0, preview_every=0)
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
    preview = result.previews[0]
    assert preview.shape[0] == 1 and preview.shape[-1] == 3 and min(preview.shape[1:3]) > 64, "a 64x64 cell, labelled"


def test_the_context_module_runs_once_per_unet_call_and_matches_per_layer_math(tiny):
    from hypernet_studio.hypernet.patch import HypernetPatch
    from hypernet_studio.hypernet.training_patch import ContextMemoPatch

    model, clip, vae = tiny
    backend = DiffusersBackend(model, clip, vae)
    network = _network(backend).train()
    network.requires_grad_(True)
    for module in network.modules():  # no dropout here, so the memo may reuse
        module.linear = torch.nn.Sequential(*[m for m in module.linear if not isinstance(m, torch.nn.Dropout)])
    backend.attach(network)
    calls = []
    network.layers[48][0].register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = clip.encode_texts(["a red square"])
    memoised = backend.predict(x, torch.tensor([10]), context)
    memoised.square().mean().backward()
    grads = [p.grad.clone() for p in network.parameters()]
    assert len(calls) == 1
    cross_layers = sum(1 for name, _ in model.unet.named_modules() if name.endswith(".attn2"))
    assert cross_layers > 1
    # Reference: the plain patch, recomputing the context module in every layer as A1111 does.
    network.requires_grad_(True)
    for p in network.parameters():
        p.grad = None
    plain = model.clone()
    patch = HypernetPatch([(network, 1.0)])
    plain.set_model_attn1_patch(patch)
    plain.set_model_attn2_patch(patch)
    reference = plain.apply_model(x, torch.tensor([10]), context)
    reference.square().mean().backward()
    assert len(calls) == 1 + cross_layers
    assert torch.allclose(memoised, reference, atol=1e-6)
    for a, p in zip(grads, network.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)
    assert isinstance(backend.memo, ContextMemoPatch)


def test_the_saved_file_names_the_checkpoint_it_was_trained_on(tiny, tmp_path):
    from hypernet_studio.hypernet.train.session import TrainingData, run_training

    model, clip, vae = tiny
    images, captions = tiny_dataset(2, size=64)
    config = TrainConfig(name="tiny", steps=1, templates=["a [filewords]"], csv_every=0, save_every=0, preview_every=0,
                         final_path=tmp_path / "tiny.pt", resolution=64)
    run_training(model, clip, vae, TrainingData(images, captions), config, spec=HypernetSpec(sizes=None))
    state = torch.load(tmp_path / "tiny.pt", weights_only=True)
    assert state["sd_checkpoint_name"] == model.components.name == "tiny-sd (built-in)"
    assert state["step"] == 1


def test_offloaded_encoders_come_back_when_training_ends(tiny, monkeypatch):
    model, clip, vae = tiny
    moves = []
    for module in (model.components.text_encoder, model.components.vae):
        monkeypatch.setattr(module, "to", lambda device, module=module: moves.append((module, torch.device(device))))
    backend = DiffusersBackend(model, clip, vae, device=torch.device("cuda"))  # not used: only the offload moves
    with backend.session(False):
        backend.offload_encoders()
        assert {device.type for _, device in moves} == {"cpu"} and len(moves) == 2
    assert len(moves) == 4 and {m for m, _ in moves[2:]} == {model.components.text_encoder, model.components.vae}


def test_training_keeps_fused_attention(tiny, monkeypatch):
    """Every attention layer runs torch's scaled-dot-product attention while training, with
    gradients recorded (no fallback to a hand-written softmax(QK^T)V)."""
    import torch.nn.functional as F

    from hypernet_studio.hypernet.sd import attention

    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting)
    model, _, _ = tiny
    layers = sum(1 for name, _ in model.components.unet.named_modules() if name.endswith(("attn1", "attn2")))
    _train(tiny, steps=1)
    assert calls.count(True) == layers  # one training step: each UNet attention layer once, with gradients


def test_previews_decode_on_the_training_device_after_the_encoders_are_offloaded(tiny, monkeypatch):
    """offload_encoders moves the VAE to the CPU; a preview must still decode on the training
    device. Without a GPU the VAE's moves are recorded rather than made (the CPU stands in for
    both devices), and a hook on its decoder reads where the VAE was last sent when it runs."""
    model, clip, vae = tiny
    components = model.components
    placed = [next(components.vae.parameters()).device]
    monkeypatch.setattr(components.vae, "to", lambda device: placed.append(torch.device(device)))
    monkeypatch.setattr(components.text_encoder, "to", lambda device: None)
    during_decode = []
    hook = components.vae.decoder.register_forward_pre_hook(lambda *args: during_decode.append(placed[-1]))
    backend = DiffusersBackend(model, clip, vae, device=torch.device("cuda"))
    try:
        with backend.session(False):
            backend.offload_encoders()
            pixels = backend.decode_latents(torch.zeros(1, 4, 8, 8))
            assert placed[-1] == torch.device("cpu")  # back where offload_encoders left it
    finally:
        hook.remove()
    assert during_decode == [torch.device("cuda")]
    assert pixels.shape == (1, 64, 64, 3) and pixels.device.type == "cpu"
