"""The attention processor honours ComfyUI's patch contract on the tiny UNet."""
import copy
import math

import pytest
import torch

from hypernet_studio.hypernet.sd.attention import ActivePatches, active_patches
from hypernet_studio.hypernet.sd.headless import HeadlessModel
from hypernet_studio.hypernet.sd.tiny import build_tiny_components


@pytest.fixture(scope="module")
def model():
    return HeadlessModel(build_tiny_components())


def _inputs(seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 77, 48, generator=generator)
    return x, torch.tensor([10.0, 700.0]), context


def _reference_attention(attn, q_in, k_in, v_in):
    """Multi-head attention written out from the definition: softmax(QK^T/sqrt(d)) V."""
    q, k, v = attn.to_q(q_in), attn.to_k(k_in), attn.to_v(v_in)
    heads = attn.heads
    d = q.shape[-1] // heads
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, d).permute(0, 2, 1, 3)
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (weights @ v).permute(0, 2, 1, 3).reshape(q_in.shape[0], -1, heads * d)
    return attn.to_out[0](out)


def test_unpatched_output_equals_diffusers_default_processor(model):
    from diffusers.models.attention_processor import AttnProcessor2_0

    stock = copy.deepcopy(model.unet)
    stock.set_attn_processor(AttnProcessor2_0())
    x, t, context = _inputs()
    with torch.no_grad():
        expected = stock(x, t, encoder_hidden_states=context).sample
        actual = model.apply_model(x, t, context)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_identity_patch_changes_nothing(model):
    x, t, context = _inputs()
    patched = model.clone()
    patched.set_model_attn1_patch(lambda q, k, v, extra: (q, k, v))
    patched.set_model_attn2_patch(lambda q, k, v, extra: (q, k, v))
    with torch.no_grad():
        torch.testing.assert_close(patched.apply_model(x, t, context), model.apply_model(x, t, context))


@pytest.mark.parametrize("which", ["attn1", "attn2"])
def test_patch_replaces_unprojected_kv_inputs(model, which):
    attn = dict(model.unet.named_modules())[f"down_blocks.1.attentions.0.transformer_blocks.0.{which}"]
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 16, 64, generator=generator)
    context = torch.randn(2, 77, 48, generator=generator) if which == "attn2" else None
    kv_source = hidden if context is None else context
    seen = {}

    def patch(q, k, v, extra):
        seen.update(extra)
        return q, k * 2.0 + 0.5, torch.tanh(v)

    active = ActivePatches(attn1=(patch,) if which == "attn1" else (), attn2=(patch,) if which == "attn2" else ())
    with torch.no_grad(), active_patches(active):
        actual = attn(hidden, encoder_hidden_states=context)
    with torch.no_grad():
        expected = _reference_attention(attn, hidden, kv_source * 2.0 + 0.5, torch.tanh(kv_source))
        unpatched = attn(hidden, encoder_hidden_states=context)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(actual, unpatched, atol=1e-4)
    assert seen["n_heads"] == attn.heads and seen["dim_head"] * attn.heads == 64
    assert seen["block"] == ("input", 1) and seen["attn"] == which


def test_patches_chain_in_order(model):
    x, t, context = _inputs()
    double = lambda q, k, v, extra: (q, k * 2.0, v * 2.0)
    shift = lambda q, k, v, extra: (q, k + 1.0, v + 1.0)
    combined = lambda q, k, v, extra: (q, k * 2.0 + 1.0, v * 2.0 + 1.0)
    chained, single, reversed_order = model.clone(), model.clone(), model.clone()
    chained.set_model_attn2_patch(double)
    chained.set_model_attn2_patch(shift)
    single.set_model_attn2_patch(combined)
    reversed_order.set_model_attn2_patch(shift)
    reversed_order.set_model_attn2_patch(double)
    with torch.no_grad():
        out_chained = chained.apply_model(x, t, context)
        torch.testing.assert_close(out_chained, single.apply_model(x, t, context))
        assert not torch.allclose(out_chained, reversed_order.apply_model(x, t, context), atol=1e-4)


def test_clones_do_not_interfere(model):
    x, t, context = _inputs()
    with torch.no_grad():
        baseline = model.apply_model(x, t, context)
    patched = model.clone()
    patched.set_model_attn1_patch(lambda q, k, v, extra: (q, k * 3.0, v))
    grandchild = patched.clone()
    grandchild.set_model_attn2_patch(lambda q, k, v, extra: (q, k, v * 0.0))
    assert model.patches("attn1_patch") == [] and len(patched.patches("attn2_patch")) == 0
    assert len(grandchild.patches("attn1_patch")) == 1 and len(grandchild.patches("attn2_patch")) == 1
    with torch.no_grad():
        out_patched = patched.apply_model(x, t, context)
        out_grandchild = grandchild.apply_model(x, t, context)
        again = model.apply_model(x, t, context)
    assert not torch.allclose(out_patched, baseline, atol=1e-4)
    assert not torch.allclose(out_grandchild, out_patched, atol=1e-4)
    torch.testing.assert_close(again, baseline)


def test_gradients_flow_through_patches(model):
    x, t, context = _inputs()
    scale = torch.ones((), requires_grad=True)
    patched = model.clone()
    patched.set_model_attn2_patch(lambda q, k, v, extra: (q, k * scale, v * scale))
    with torch.inference_mode(False), torch.enable_grad():
        patched.apply_model(x, t, context).square().mean().backward()
    assert scale.grad is not None and scale.grad.abs() > 0


def test_model_patches_to_moves_patches_and_attention_widths(model):
    class Movable:
        def __init__(self):
            self.moved_to = []

        def __call__(self, q, k, v, extra):
            return q, k, v

        def to(self, target):
            self.moved_to.append(target)
            return self

    patch = Movable()
    patched = model.clone()
    patched.set_model_attn1_patch(patch)
    patched.model_patches_to(torch.float32)
    assert patch.moved_to == [torch.float32]
    assert model.attention_widths() == [32, 48, 64]
