"""The attention patch: placement before to_k/to_v, width selection, strength, stacking, cloning."""
import logging

import pytest
import torch

from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.patch import HypernetPatch, apply_hypernetwork, check_widths, model_attention_widths
from hypernet_studio.hypernet.spec import HypernetSpec

DIM, CONTEXT = 8, 12


def _hn(sizes, seed, activation="relu"):
    return Hypernetwork.build(HypernetSpec(activation=activation, weight_init="XavierNormal", sizes=sizes), seed=seed)


def _block():
    from diffusers.models.attention import BasicTransformerBlock

    from hypernet_studio.hypernet.sd.attention import PatchableAttnProcessor

    torch.manual_seed(0)
    block = BasicTransformerBlock(DIM, num_attention_heads=2, attention_head_dim=4, cross_attention_dim=CONTEXT).eval()
    block.attn1.set_processor(PatchableAttnProcessor("attn1", is_cross_attention=False))
    block.attn2.set_processor(PatchableAttnProcessor("attn2", is_cross_attention=True))
    return block


def _run(block, x, context, patches):
    from hypernet_studio.hypernet.sd.attention import ActivePatches, active_patches

    with active_patches(ActivePatches(attn1=tuple(patches), attn2=tuple(patches))):
        return block(x, encoder_hidden_states=context)


def _attention(attn, q_in, k_in, v_in):
    """Multi-head attention written out by hand from the projections."""
    heads = attn.heads
    q, k, v = attn.to_q(q_in), attn.to_k(k_in), attn.to_v(v_in)
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(q_in.shape[0], q_in.shape[1], -1)
    return attn.to_out[0](out)


def _reference_block(block, x, context, k_map, v_map):
    """A1111 placement: the context fed to to_k / to_v is replaced by hn(context)."""
    n1 = block.norm1(x)
    h = x + _attention(block.attn1, n1, k_map(n1), v_map(n1))
    n2 = block.norm2(h)
    h = h + _attention(block.attn2, n2, k_map(context), v_map(context))
    return h + block.ff(block.norm3(h))


def test_patch_equals_replacing_kv_inputs_before_projection():
    block, hn = _block(), _hn([DIM, CONTEXT], seed=1)
    x, context = torch.randn(2, 6, DIM), torch.randn(2, 5, CONTEXT)
    with torch.no_grad():
        got = _run(block, x, context, [HypernetPatch([(hn, 0.75)])])
        expected = _reference_block(block, x, context,
                                    lambda t: hn.layers[t.shape[-1]][0](t, multiplier=0.75),
                                    lambda t: hn.layers[t.shape[-1]][1](t, multiplier=0.75))
        plain = _run(block, x, context, [])
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_widths_absent_from_the_file_leave_the_block_unchanged():
    block = _block()
    x, context = torch.randn(2, 6, DIM), torch.randn(2, 5, CONTEXT)
    with torch.no_grad():
        plain = _run(block, x, context, [])
        only_other = _run(block, x, context, [HypernetPatch([(_hn([5], seed=2), 1.0)])])
        only_self = _run(block, x, context, [HypernetPatch([(_hn([DIM], seed=2), 1.0)])])
    assert torch.equal(only_other, plain)
    assert not torch.allclose(only_self, plain, atol=1e-3)


def test_strength_zero_and_absent_widths_return_inputs_exactly():
    hn = _hn([DIM], seed=0)
    q, k, v = torch.randn(1, 3, DIM), torch.randn(1, 3, DIM), torch.randn(1, 3, DIM)
    out = HypernetPatch([(hn, 0.0)])(q, k, v, {})
    assert out[0] is q and out[1] is k and out[2] is v
    other = torch.randn(1, 3, 7)
    assert HypernetPatch([(hn, 1.0)])(q, other, other, {})[1] is other
    q2, k2, v2 = HypernetPatch([(hn, 1.0)])(q, k, v, {})
    assert q2 is q and torch.allclose(k2, hn.layers[DIM][0](k)) and torch.allclose(v2, hn.layers[DIM][1](v))


def test_stacking_equals_composition_with_own_strengths():
    a, b = _hn([DIM], seed=1), _hn([DIM, CONTEXT], seed=2, activation="tanh")
    k, v = torch.randn(2, 4, DIM), torch.randn(2, 4, DIM)
    _, k2, v2 = HypernetPatch([(a, 0.5), (b, -2.0)])(k, k, v, {})
    assert torch.allclose(k2, b.layers[DIM][0](a.layers[DIM][0](k, 0.5), -2.0))
    assert torch.allclose(v2, b.layers[DIM][1](a.layers[DIM][1](v, 0.5), -2.0))
    _, k3, v3 = HypernetPatch([(b, -2.0)])(*HypernetPatch([(a, 0.5)])(k, k, v, {}), {})
    assert torch.equal(k3, k2) and torch.equal(v3, v2)


def test_deepcopy_shares_the_networks_like_model_weights():
    import copy

    hn = _hn([DIM], seed=0)
    patch = HypernetPatch([(hn, 0.5)])
    options = copy.deepcopy({"transformer_options": {"patches": {"attn1_patch": [patch]}}})
    copied = options["transformer_options"]["patches"]["attn1_patch"][0]
    assert copied is not patch and copied.entries == [(hn, 0.5)] and copied.entries[0][0] is hn


def test_fp32_master_weights_and_input_dtype_kept():
    hn = _hn([DIM], seed=0)
    patch = HypernetPatch([(hn, 1.0)])
    assert patch.to(torch.float16) is patch and next(hn.parameters()).dtype == torch.float32
    k = torch.randn(1, 3, DIM).to(torch.bfloat16)
    _, k2, _ = patch(k, k, k, {})
    assert k2.dtype == torch.bfloat16
    assert torch.allclose(k2.float(), hn.layers[DIM][0](k.float()), atol=0.05)


def test_training_mode_patch_lets_gradients_reach_the_hypernetwork():
    hn = _hn([DIM], seed=0).train()
    k = torch.randn(1, 3, DIM)
    _, k2, v2 = HypernetPatch([(hn, 1.0)])(k, k, k, {})
    (k2.sum() + v2.sum()).backward()
    assert all(p.grad is not None for p in hn.parameters())


class FakePatcher:
    """The ModelPatcher surface apply_hypernetwork relies on."""

    def __init__(self, patches=None):
        self.patches = patches or {"attn1_patch": [], "attn2_patch": []}

    def clone(self):
        return FakePatcher({key: list(value) for key, value in self.patches.items()})

    def set_model_attn1_patch(self, patch):
        self.patches["attn1_patch"].append(patch)

    def set_model_attn2_patch(self, patch):
        self.patches["attn2_patch"].append(patch)


def test_apply_clones_appends_and_never_mutates():
    base = FakePatcher()
    hn = _hn([DIM], seed=0)
    assert apply_hypernetwork(base, hn, 0.0) is base
    one = apply_hypernetwork(base, hn, 1.0)
    two = apply_hypernetwork(one, hn, 0.5)
    assert base.patches == {"attn1_patch": [], "attn2_patch": []}
    assert len(one.patches["attn1_patch"]) == 1 and len(two.patches["attn2_patch"]) == 2
    assert two.patches["attn1_patch"][1].entries[0][1] == 0.5
    with pytest.raises(TypeError, match="clone"):
        apply_hypernetwork(object(), hn, 1.0)


def test_width_mismatch_warns(caplog):
    sd1 = _hn([768, 320, 640, 1280], seed=0)
    assert check_widths(sd1, [320, 640, 768, 1280]) is None
    message = check_widths(sd1, [320, 640, 1024, 1280])
    assert "[768] never apply" in message and "attention at [1024] stays unchanged" in message
    assert "only [320, 640, 1280] apply" in message
    torch_model = type("M", (), {})()
    torch_model.model = type("Inner", (), {})()
    torch_model.model.diffusion_model = _block()
    assert model_attention_widths(torch_model) == [DIM, CONTEXT]


def test_on_the_tiny_headless_model():
    from hypernet_studio.hypernet.sd.headless import HeadlessModel
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    model = HeadlessModel(build_tiny_components())
    widths = model.attention_widths()
    hn = _hn(widths, seed=0)
    torch.manual_seed(0)
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, model.components.context_dim)
    with torch.inference_mode():
        plain = model.apply_model(x, t, context)
        patched = apply_hypernetwork(model, hn, 1.0)
        assert torch.equal(apply_hypernetwork(model, hn, 0.0).apply_model(x, t, context), plain)
        out = patched.apply_model(x, t, context)
        assert not torch.allclose(out, plain, atol=1e-4)
        assert torch.equal(model.apply_model(x, t, context), plain), "the input model stays unpatched"


def test_apply_warns_for_another_family(caplog):
    from hypernet_studio.hypernet.sd.headless import HeadlessModel
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    with caplog.at_level(logging.WARNING):
        apply_hypernetwork(HeadlessModel(build_tiny_components()), _hn([768, 320], seed=0), 1.0)
    assert "none match, so applying it changes nothing" in caplog.text


def test_while_sampling_the_context_result_is_computed_once_per_unet_call():
    """The context reaches every cross-attention layer of a call as one tensor: one computation
    per call (not per layer), the same pictures, and a new computation once a weight changes."""
    from hypernet_studio.hypernet.sd.headless import HeadlessModel
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    model = HeadlessModel(build_tiny_components())
    width = model.components.context_dim
    hn = _hn(model.attention_widths(), seed=0)
    calls = []
    hn.layers[width][0].register_forward_hook(lambda *args: calls.append(1))
    patched = apply_hypernetwork(model, hn, 0.8)
    generator = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 4, 8, 8, generator=generator), torch.tensor([500])
    context = torch.randn(1, 77, width, generator=generator)
    with torch.enable_grad():  # gradients on: no reuse, one computation per cross-attention layer
        per_layer = patched.apply_model(x, t, context).detach()
    layers = len(calls)
    assert layers > 1
    calls.clear()
    with torch.inference_mode():
        once = patched.apply_model(x, t, context)
    assert len(calls) == 1 and torch.equal(once, per_layer)
    with torch.no_grad():
        hn.layers[width][0].linear[0].weight.mul_(1.5)
        calls.clear()
        changed = patched.apply_model(x, t, context)
    assert len(calls) == 1 and not torch.equal(changed, once), "changed weights are used at once"
