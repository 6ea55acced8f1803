"""Module math against hand-computed values and a reference written from the file-format notes
(docs/file-format.md: layer layout and y = x + f(x) * m)."""
import math

import pytest
import torch

from hypernet_studio.hypernet.network import Hypernetwork, HypernetworkModule
from hypernet_studio.hypernet.spec import HypernetSpec, legacy_dropout_structure


def _set(module, weights):
    with torch.no_grad():
        for key, value in weights.items():
            module.state_dict()[key].copy_(torch.tensor(value))


# Hand-computed: x=[1,-2]; h = W0 x + b0 = [1,-2,-1,4]; relu(h) = [1,0,0,4].
# linear: f = W1 h + b1 = [1+4+0.5, -1-1] = [5.5, -2];  relu: f = [1+4+0.5, 0-1] = [5.5, -1].
GOLDEN = {"w0": [[1., 0.], [0., 1.], [1., 1.], [1., -1.]], "b0": [0., 0., 0., 1.],
          "w1": [[1., 0., 0., 1.], [0., 0., 1., 0.]], "b1": [0.5, -1.]}


@pytest.mark.parametrize("activation,keys,f", [
    ("linear", ("linear.0", "linear.1"), [5.5, -2.0]),
    ("relu", ("linear.0", "linear.2"), [5.5, -1.0]),
])
def test_golden_forward_on_width_two(activation, keys, f):
    module = HypernetworkModule(2, HypernetSpec(activation=activation, sizes=[2]))
    _set(module, {f"{keys[0]}.weight": GOLDEN["w0"], f"{keys[0]}.bias": GOLDEN["b0"],
                  f"{keys[1]}.weight": GOLDEN["w1"], f"{keys[1]}.bias": GOLDEN["b1"]})
    x = torch.tensor([[1.0, -2.0]])
    module.eval()
    for m in (0.0, 0.5, 1.0, -1.0):
        expected = torch.tensor([[1.0 + f[0] * m, -2.0 + f[1] * m]])
        assert torch.equal(module(x, multiplier=m), expected)
    module.train()
    assert torch.equal(module(x, multiplier=0.5), torch.tensor([[1.0 + f[0], -2.0 + f[1]]])), "training uses m=1"


FP32_EPS = torch.finfo(torch.float32).eps


def _assert_same_math(actual, expected, ulps=16):
    """The module (fused Linear kernels) and the reference (plain matmuls) compute the same math in a
    different order, and the order depends on the CPU's vector width (AVX2 vs AVX-512). Each dot
    product of the widths used here (at most 64 terms), the layer norm and the activation add a few
    units in the last place of the values involved, so the tolerance is `ulps` of fp32's epsilon
    relative to the largest magnitude in play, elementwise plus overall: about 2e-6 for values
    near 1, and never tighter than the rounding that two correct fp32 implementations can differ by."""
    scale = float(expected.abs().max().clamp(min=1.0))
    torch.testing.assert_close(actual, expected, rtol=ulps * FP32_EPS, atol=ulps * FP32_EPS * scale)


def _reference(state, spec, x, m):
    """y = x + f(x)*m, walking layers with indices counted as the spec prescribes."""
    n, idx, h = len(spec.layer_structure), 0, x
    for i in range(n - 1):
        h = h @ state[f"linear.{idx}.weight"].T + state[f"linear.{idx}.bias"]
        idx += 1
        if spec.activation != "linear" and not (i == n - 2 and not spec.activate_output):
            h = {"relu": torch.relu, "tanh": torch.tanh,
                 # mish as torch's kernel: the formula x*tanh(softplus(x)) itself differs from it by ~1e-6
                 "mish": torch.nn.functional.mish,
                 "swish": lambda t: t * torch.clamp(t + 3, 0, 6) / 6}[spec.activation](h)
            idx += 1
        if spec.layer_norm:
            g, b = state[f"linear.{idx}.weight"], state[f"linear.{idx}.bias"]
            mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
            h = (h - mean) / torch.sqrt(var + 1e-5) * g + b
            idx += 1
        if spec.dropout_structure[i + 1] > 0:
            idx += 1
    return x + h * m


@pytest.mark.parametrize("structure", ["1, 2, 1", "1, 1.5, 2, 1"])
@pytest.mark.parametrize("activation", ["linear", "relu", "swish", "mish", "tanh"])
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("activate_output", [False, True])
def test_forward_agrees_with_spec_reference(structure, activation, layer_norm, activate_output):
    n = len(structure.split(","))
    dropout = [0] + [0.2] * (n - 2) + [0]
    spec = HypernetSpec(layer_structure=structure, activation=activation, layer_norm=layer_norm,
                        dropout_structure=dropout, activate_output=activate_output,
                        weight_init="XavierNormal", sizes=[32])
    torch.manual_seed(0)
    module = HypernetworkModule(32, spec)
    with torch.no_grad():  # make LayerNorm non-trivial (A1111's gamma init is ~0)
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    module.eval()
    x = torch.randn(2, 77, 32)
    state = module.state_dict()
    for m in (0.0, 0.5, 1.0, -1.0):
        _assert_same_math(module(x, multiplier=m), _reference(state, spec, x, m))
    assert torch.equal(module(x, multiplier=0.0), x)
    assert torch.equal(module(x), module(x)), "eval disables dropout"


def test_training_mode_enables_dropout_and_eval_disables_it():
    hn = Hypernetwork.build(HypernetSpec(dropout_structure=[0, 0.5, 0], sizes=[16]), seed=0)
    x = torch.randn(4, 64, 16)
    k = hn.layers[16][0]
    with torch.no_grad():
        k.linear[0].weight.normal_()
    hn.train()
    assert k.training and not torch.equal(k(x), k(x))
    hn.eval()
    assert not k.training and torch.equal(k(x), k(x))


@pytest.mark.parametrize("weight_init", ["KaimingUniform", "Normal"])
def test_seeded_build_equals_a1111_creation_after_manual_seed(weight_init):
    spec = HypernetSpec(activation="relu", layer_norm=True, weight_init=weight_init, sizes=[8, 4])
    hn = Hypernetwork.build(spec, seed=1234)
    torch.manual_seed(1234)  # A1111: construct Linear/LayerNorm (default init consumes RNG), then re-init
    for d in (8, 4):
        for half in (0, 1):
            l0, ln0, l1, ln1 = (torch.nn.Linear(d, 2 * d), torch.nn.LayerNorm(2 * d),
                                torch.nn.Linear(2 * d, d), torch.nn.LayerNorm(d))
            for layer in (l0, ln0, l1, ln1):
                if weight_init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                    # A1111 zeroes these biases with normal_(std=0), which draws from the RNG.
                    torch.nn.init.normal_(layer.weight, 0.0, 0.01)
                    torch.nn.init.normal_(layer.bias, 0.0, 0.0)
                else:
                    torch.nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
                    torch.nn.init.zeros_(layer.bias)
            state = hn.layers[d][half].state_dict()
            for index, layer in zip((0, 2, 3, 4), (l0, ln0, l1, ln1)):
                assert torch.equal(state[f"linear.{index}.weight"], layer.weight.detach())
                assert torch.count_nonzero(state[f"linear.{index}.bias"]) == 0
    assert not torch.equal(Hypernetwork.build(spec, seed=1).layers[8][0].linear[0].weight,
                           Hypernetwork.build(spec, seed=2).layers[8][0].linear[0].weight)


@pytest.mark.parametrize("init,std,bound", [
    ("Normal", 0.01, None),
    ("XavierUniform", None, math.sqrt(6 / (256 + 512))),
    ("XavierNormal", math.sqrt(2 / (256 + 512)), None),
    ("KaimingUniform", None, math.sqrt(6 / 256)),
    ("KaimingNormal", math.sqrt(2 / 256), None),
])
def test_init_statistics(init, std, bound):
    hn = Hypernetwork.build(HypernetSpec(weight_init=init, layer_norm=True, sizes=[256]), seed=0)
    module = hn.layers[256][0]
    weight = module.linear[0].weight.detach()  # Linear 256 -> 512
    assert torch.count_nonzero(module.linear[0].bias) == 0
    if std is not None:
        assert abs(weight.std().item() / std - 1) < 0.02
    if bound is not None:
        assert weight.abs().max().item() <= bound and weight.abs().max().item() > 0.99 * bound
        assert abs(weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.02
    gamma = module.linear[1].weight.detach()  # LayerNorm gamma: N(0, 0.01) whatever the init (A1111 quirk)
    assert abs(gamma.mean().item()) < 0.003 and abs(gamma.std().item() / 0.01 - 1) < 0.15
    assert torch.count_nonzero(module.linear[1].bias) == 0


def test_leakyrelu_kaiming_uses_leaky_relu_gain():
    hn = Hypernetwork.build(HypernetSpec(activation="leakyrelu", weight_init="KaimingNormal", sizes=[256]), seed=0)
    weight = hn.layers[256][0].linear[0].weight.detach()
    # A1111 passes nonlinearity='leaky_relu' with torch's default a=0, so the gain is still sqrt(2).
    assert abs(weight.std().item() / (math.sqrt(2) / math.sqrt(256)) - 1) < 0.02


def test_container_api_and_copy_escapes_inference_mode():
    spec = HypernetSpec(layer_structure="1, 2, 1", sizes=[8, 4])
    with torch.inference_mode():
        hn = Hypernetwork.build(spec, seed=0, name="cat")
        clone = hn.copy()
    assert hn.sizes == [8, 4] and hn.name == "cat" and hn.step == 0
    assert sum(p.numel() for p in hn.parameters()) == 2 * ((8 * 16 + 16 + 16 * 8 + 8) + (4 * 8 + 8 + 8 * 4 + 4))
    assert not hn.training and hn.train().training and not hn.eval().training
    assert all(not p.is_inference() for p in clone.parameters())
    loss = clone.layers[8][0](torch.ones(1, 8)).sum()
    loss.backward()
    assert clone.layers[8][0].linear[0].weight.grad is not None
    with torch.no_grad():
        clone.layers[8][0].linear[0].weight.add_(1)
    assert not torch.equal(clone.layers[8][0].linear[0].weight, hn.layers[8][0].linear[0].weight)
    with pytest.raises(ValueError, match="sizes"):
        Hypernetwork.build(HypernetSpec(sizes=None))
    assert Hypernetwork.build(HypernetSpec(sizes=None), sizes=[32, 64]).sizes == [32, 64]


def test_legacy_dropout_layers_shift_indices():
    spec = HypernetSpec(layer_structure="1, 2, 2, 1", activation="relu",
                        dropout_structure=legacy_dropout_structure([1, 2, 2, 1], True, False), sizes=[4])
    keys = [k for k in HypernetworkModule(4, spec).state_dict()]
    assert keys == ["linear.0.weight", "linear.0.bias", "linear.3.weight", "linear.3.bias",
                    "linear.5.weight", "linear.5.bias"]


@pytest.mark.parametrize("width,tokens", [(768, 77), (320, 4096)])
def test_golden_forward_at_sd1_widths(width, tokens):
    """Seeded random weights, x of SD1 shapes, fp32 eval: equal to the reference within fp32 rounding."""
    spec = HypernetSpec(activation="relu", layer_norm=True, sizes=[width])
    torch.manual_seed(0)
    hn = Hypernetwork.build(spec)
    x = torch.randn(2 if tokens < 1000 else 1, tokens, width)
    for half in (0, 1):
        module = hn.layers[width][half]
        state = module.state_dict()
        for m in (0.0, 0.5, 1.0, -1.0):
            _assert_same_math(module(x, multiplier=m), _reference(state, spec, x, m))
        assert torch.equal(module(x, multiplier=0.0), x)
