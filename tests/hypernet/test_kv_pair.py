"""The fused k/v pair (kv_pair.py) against the two modules run one after the other."""
from __future__ import annotations

import pytest
import torch

from hypernet_studio.hypernet.kv_pair import FUSED_DEVICE_TYPES, pair_forward
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.patch import HypernetPatch
from hypernet_studio.hypernet.spec import HypernetSpec, activation_names

FP32_EPS = torch.finfo(torch.float32).eps
WIDTH = 48


def _assert_close(actual, expected, terms, scale=None):
    """Fused and unfused sum the same products in a different order (one wide GEMM or a batched
    one against two narrow ones), so each value may differ by a few fp32 units per dot product
    of `terms` terms, relative to the largest magnitude involved (`scale`: by default the
    largest value compared; a gradient sum can cancel to far less than its terms)."""
    scale = scale if scale is not None else float(expected.abs().max().clamp(min=1e-3))
    tolerance = 4 * terms * FP32_EPS
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance * scale)


def _pair(structure, activation, layer_norm, activate_output, dropout):
    n = len(structure.split(","))
    spec = HypernetSpec(layer_structure=structure, activation=activation, layer_norm=layer_norm,
                        activate_output=activate_output, weight_init="XavierNormal",
                        dropout_structure=[0] + [0.25 if dropout else 0] * (n - 2) + [0], sizes=[WIDTH])
    network = Hypernetwork.build(spec, seed=3)
    with torch.no_grad():  # distinct, non-trivial k and v weights (A1111's LayerNorm init is ~0)
        for index, parameter in enumerate(network.parameters()):
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(index)) * 0.3)
    return network, network.layers[WIDTH]


GRID = [(structure, activation, layer_norm, activate_output)
        for structure in ("1, 2, 1", "1, 1.5, 2, 1", "1, 1")
        for activation in activation_names()
        for layer_norm in (False, True)
        for activate_output in (False, True)]


@pytest.mark.parametrize("structure,activation,layer_norm,activate_output", GRID)
def test_forward_and_gradients_equal_the_modules_on_the_variant_grid(structure, activation, layer_norm,
                                                                     activate_output):
    network, pair = _pair(structure, activation, layer_norm, activate_output, dropout=True)
    x = torch.randn(2, 7, WIDTH, generator=torch.Generator().manual_seed(9))
    terms = 2 * WIDTH
    network.eval()  # dropout is fixed in eval, so the fused pair runs it too
    with torch.no_grad():
        for strength in (1.0, 0.6, -1.5):
            for got, want in zip(pair_forward(pair, x, strength, fused=True),
                                 pair_forward(pair, x, strength, fused=False)):
                _assert_close(got, want, terms)
    if activation == "rrelu":
        return  # random in training: it always runs unfused there (next test)
    network, pair = _pair(structure, activation, layer_norm, activate_output, dropout=False)
    network.train().requires_grad_(True)
    results = []
    for fused in (True, False):
        x_in = x.clone().requires_grad_(True)
        k, v = pair_forward(pair, x_in, fused=fused)
        (k * torch.linspace(-1, 1, WIDTH) + v.square() * 0.5).sum().backward()
        results.append([x_in.grad] + [p.grad.clone() for p in network.parameters()])
        for p in network.parameters():
            p.grad = None
    largest = max(float(g.abs().max()) for g in results[1])
    for got, want in zip(*results):
        _assert_close(got, want, terms * 14, scale=largest)


def test_training_dropout_runs_the_modules_themselves():
    """Dropout masks in training come from the modules, as an unfused run draws them."""
    network, pair = _pair("1, 2, 1", "relu", False, False, dropout=True)
    network.train()
    x = torch.randn(3, 5, WIDTH)
    torch.manual_seed(4)
    fused = pair_forward(pair, x, fused=True)
    torch.manual_seed(4)
    unfused = pair_forward(pair, x, fused=False)
    assert all(torch.equal(a, b) for a, b in zip(fused, unfused))


def test_patch_pairs_a_shared_input_and_caches_fused_weights_until_they_change():
    network, pair = _pair("1, 2, 1", "relu", True, False, dropout=False)
    network.eval()
    x = torch.randn(1, 4, WIDTH)
    patch = HypernetPatch([(network, 0.8)])
    with torch.no_grad():
        _, k_seq, v_seq = patch(x, x.clone(), x.clone())  # distinct inputs: each module on its own
        k_pair, v_pair = pair_forward(pair, x, 0.8, fused=True)
        _assert_close(k_pair, k_seq, 2 * WIDTH)
        _assert_close(v_pair, v_seq, 2 * WIDTH)
        pair[0].linear[0].weight.mul_(2)  # an in-place change must not reuse stale fused weights
        changed, _ = pair_forward(pair, x, 0.8, fused=True)
        _assert_close(changed, pair[0](x, 0.8), 2 * WIDTH)
    assert "cpu" not in FUSED_DEVICE_TYPES  # measured slower there (bench/bench_train.py)


def test_files_do_not_change_when_the_pair_runs_fused(tmp_path):
    from hypernet_studio.hypernet.file_format import save_hypernetwork

    network, pair = _pair("1, 2, 1", "relu", True, False, dropout=False)
    before = save_hypernetwork(network, tmp_path / "a.pt").read_bytes()
    with torch.no_grad():
        pair_forward(pair, torch.randn(1, 3, WIDTH), 1.0, fused=True)
    assert save_hypernetwork(network, tmp_path / "b.pt").read_bytes() == before


def test_fused_pair_is_one_product_then_one_batched_product(monkeypatch):
    network, pair = _pair("1, 2, 1", "relu", False, False, dropout=False)
    network.eval()
    calls = {"linear": 0, "baddbmm": 0}
    linear, baddbmm = torch.nn.functional.linear, torch.baddbmm

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(torch.nn.functional, "linear", count("linear", linear))
    monkeypatch.setattr(torch, "baddbmm", count("baddbmm", baddbmm))
    with torch.no_grad():
        pair_forward(pair, torch.randn(1, 3, WIDTH), 1.0, fused=True)
    assert calls == {"linear": 1, "baddbmm": 1}
    with torch.no_grad():
        pair_forward(pair, torch.randn(1, 3, WIDTH), 1.0, fused=False)
    assert calls == {"linear": 5, "baddbmm": 1}


def test_on_a_fusing_device_training_runs_the_modules_and_eval_the_fused_pair(monkeypatch):
    """Fused in training, the concatenated weights would be rebuilt every call (not leaf tensors:
    autocast's cast cache misses them), so only eval (sampling) fuses by default."""
    from hypernet_studio.hypernet import kv_pair

    monkeypatch.setattr(kv_pair, "FUSED_DEVICE_TYPES", frozenset({"cpu"}))  # this CPU stands in for a GPU
    fused_runs = []
    run_fused = kv_pair._run_fused
    monkeypatch.setattr(kv_pair, "_run_fused", lambda steps, x: fused_runs.append(x) or run_fused(steps, x))
    network, pair = _pair("1, 2, 1", "relu", False, False, dropout=False)
    x = torch.randn(2, 3, WIDTH)
    network.train()
    pair_forward(pair, x)
    assert fused_runs == []
    network.eval()
    pair_forward(pair, x)
    assert len(fused_runs) == 1
