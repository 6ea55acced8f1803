"""File format: A1111 `.pt` layout grid, legacy variants, refusals, safetensors, .optim (docs/file-format.md)."""
import os
import pickle
from collections import OrderedDict

import pytest
import torch

from hypernet_studio.hypernet import file_format
from hypernet_studio.hypernet.file_format import HypernetFileError, load_hypernetwork, save_hypernetwork
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec, file_size_bytes, legacy_dropout_structure

A1111_ORDER = ["step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
               "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
               "last_layer_dropout", "optional_info"]
SIZES = [24, 8, 16]


def expected_layout(structure, activation, layer_norm, dropout, activate_output, d):
    """(key, shape) list derived by hand from the A1111 rules in the spec."""
    out, idx, n = [], 0, len(structure)
    for i in range(n - 1):
        a, b = int(d * structure[i]), int(d * structure[i + 1])
        out += [(f"linear.{idx}.weight", (b, a)), (f"linear.{idx}.bias", (b,))]
        idx += 1
        if activation != "linear" and not (i >= n - 2 and not activate_output):
            idx += 1
        if layer_norm:
            out += [(f"linear.{idx}.weight", (b,)), (f"linear.{idx}.bias", (b,))]
            idx += 1
        if dropout[i + 1] > 0:
            idx += 1
    return out


GRID = [(s, a, ln, dname, ao)
        for s in ([1, 2, 1], [1, 2, 2, 1], [1, 1.5, 1])
        for a in ("linear", "relu", "swish", "mish")
        for ln in (False, True)
        for dname in ("none", "legacy", "custom")
        for ao in (False, True)]


def _dropout(structure, kind):
    if kind == "none":
        return [0] * len(structure)
    if kind == "legacy":
        return legacy_dropout_structure(structure, True, True)
    return {3: [0, 0.1, 0], 4: [0, 0.1, 0.2, 0]}[len(structure)]


@pytest.mark.parametrize("structure,activation,layer_norm,dropout_kind,activate_output", GRID)
def test_pt_layout_grid(tmp_path, structure, activation, layer_norm, dropout_kind, activate_output):
    dropout = _dropout(structure, dropout_kind)
    spec = HypernetSpec(layer_structure=structure, activation=activation, layer_norm=layer_norm,
                        dropout_structure=dropout, activate_output=activate_output, sizes=SIZES)
    hn = Hypernetwork.build(spec, seed=0, name="grid")
    path = save_hypernetwork(hn, tmp_path / "grid.pt")
    raw = torch.load(path, weights_only=True)
    assert type(raw) is dict
    assert list(raw) == SIZES + A1111_ORDER
    for d in SIZES:
        assert type(d) is int and type(raw[d]) is tuple and len(raw[d]) == 2
        for module_state in raw[d]:
            layout = expected_layout(structure, activation, layer_norm, dropout, activate_output, d)
            assert [(k, tuple(t.shape)) for k, t in module_state.items()] == layout
            assert all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()
                       for t in module_state.values())
    types = {k: type(raw[k]) for k in A1111_ORDER}
    assert types == {"step": int, "name": str, "layer_structure": list, "activation_func": str,
                     "is_layer_norm": bool, "weight_initialization": str, "sd_checkpoint": type(None),
                     "sd_checkpoint_name": type(None), "activate_output": bool, "use_dropout": bool,
                     "dropout_structure": list, "last_layer_dropout": bool, "optional_info": type(None)}
    assert raw["layer_structure"] == [float(m) for m in structure]
    assert all(type(m) is float for m in raw["layer_structure"])
    assert raw["use_dropout"] == (dropout_kind != "none")
    assert raw["dropout_structure"] == dropout
    assert raw["last_layer_dropout"] == (dropout[-2] != 0)
    if dropout_kind == "none":
        assert all(type(p) is int for p in raw["dropout_structure"])
    # A1111-style strict rebuild from metadata alone: no missing or unexpected keys, same forward.
    loaded = load_hypernetwork(path)
    assert loaded.sizes == SIZES and loaded.spec == hn.spec.with_sizes(SIZES)
    x = torch.randn(1, 5, 16)
    assert torch.equal(loaded.layers[16][1](x, multiplier=0.7), hn.layers[16][1](x, multiplier=0.7))


def test_sd1_file_size_matches_estimate(tmp_path):
    spec = HypernetSpec()  # 1, 2, 1 on SD1: 83.69 MiB
    path = save_hypernetwork(Hypernetwork.build(spec, seed=0), tmp_path / "sd1.pt")
    actual = os.path.getsize(path)
    assert abs(actual - 87_759_360) < 64 * 1024
    assert abs(actual - file_size_bytes(spec)) < 16 * 1024


def test_metadata_round_trips(tmp_path):
    hn = Hypernetwork.build(HypernetSpec(sizes=[8]), seed=0, name="cat")
    hn.step, hn.sd_checkpoint, hn.sd_checkpoint_name, hn.optional_info = 499, "0123456789", "v1-5", "hello"
    for suffix in (".pt", ".safetensors"):
        written = save_hypernetwork(hn, tmp_path / f"cat{suffix}", extra_metadata={"trainer": {"lr": 1e-5}})
        loaded = load_hypernetwork(written)
        assert (loaded.name, loaded.step, loaded.sd_checkpoint, loaded.sd_checkpoint_name, loaded.optional_info) == \
            ("cat", 499, "0123456789", "v1-5", "hello")
        assert loaded.extra_metadata == {"trainer": {"lr": 1e-5}}
        assert loaded.filename == str(tmp_path / f"cat{suffix}")


def _legacy_state(d=4, **meta):
    torch.manual_seed(0)
    pair = [OrderedDict([("linear1.weight", torch.randn(2 * d, d)), ("linear1.bias", torch.randn(2 * d)),
                         ("linear2.weight", torch.randn(d, 2 * d)), ("linear2.bias", torch.randn(d))])
             for _ in range(2)]
    return {d: pair, **meta}  # a list, not a tuple, and no metadata at all


def test_reads_legacy_keys_lists_and_missing_metadata(tmp_path):
    path = tmp_path / "old.pt"
    state = _legacy_state()
    torch.save(state, path)
    hn = load_hypernetwork(path)
    assert hn.name == "old" and hn.step == 0 and hn.spec.layer_structure == [1.0, 2.0, 1.0]
    assert hn.spec.activation == "linear" and hn.spec.activate_output is True
    x = torch.randn(3, 4)
    w1, b1, w2, b2 = state[4][1].values()
    assert torch.allclose(hn.layers[4][1](x, multiplier=0.5), x + ((x @ w1.T + b1) @ w2.T + b2) * 0.5, atol=1e-6)


def test_missing_activate_output_means_true_like_a1111(tmp_path):
    torch.manual_seed(0)
    d = 4
    pair = tuple(OrderedDict([("linear.0.weight", torch.randn(2 * d, d)), ("linear.0.bias", torch.randn(2 * d)),
                              ("linear.2.weight", torch.randn(d, 2 * d)), ("linear.2.bias", torch.randn(d))])
                 for _ in range(2))
    torch.save({d: pair, "activation_func": "relu", "layer_structure": [1, 2, 1]}, tmp_path / "a.pt")
    hn = load_hypernetwork(tmp_path / "a.pt")
    assert hn.spec.activate_output is True
    x = torch.randn(10, d)
    w0, b0, w2, b2 = pair[0].values()
    expected = x + torch.relu(torch.relu(x @ w0.T + b0) @ w2.T + b2)
    assert torch.allclose(hn.layers[d][0](x), expected, atol=1e-6)


def test_legacy_use_dropout_files_rebuild_dropout_indices(tmp_path):
    d = 4
    keys = [("linear.0", (2 * d, d)), ("linear.3", (2 * d, 2 * d)), ("linear.5", (d, 2 * d))]
    module = OrderedDict()
    for key, shape in keys:
        module[f"{key}.weight"], module[f"{key}.bias"] = torch.randn(shape), torch.randn(shape[0])
    torch.save({d: (module, module), "layer_structure": [1, 2, 2, 1], "activation_func": "relu",
                "use_dropout": True, "last_layer_dropout": False, "activate_output": False}, tmp_path / "l.pt")
    hn = load_hypernetwork(tmp_path / "l.pt")
    assert hn.spec.dropout_structure == [0, 0.3, 0, 0]
    assert isinstance(hn.layers[d][0].linear[2], torch.nn.Dropout) and not hn.training


def test_dropout_lists_a1111_accepts_load_as_a1111_builds_them(tmp_path):
    # A1111's UI takes any number of dropout values and builds Dropout(p) only for entries
    # 1..n-1 with p > 0: a 4-entry list on 1,2,1 and a negative entry both load there.
    d = 4
    module = OrderedDict([("linear.0.weight", torch.randn(2 * d, d)), ("linear.0.bias", torch.randn(2 * d)),
                          ("linear.2.weight", torch.randn(d, 2 * d)), ("linear.2.bias", torch.randn(d))])
    torch.save({d: (module, module), "layer_structure": [1.0, 2.0, 1.0], "activation_func": "linear",
                "use_dropout": True, "dropout_structure": [0.0, 0.1, 0.0, 0.2]}, tmp_path / "long.pt")
    hn = load_hypernetwork(tmp_path / "long.pt")
    assert hn.spec.dropout_structure == [0, 0.1, 0]
    assert isinstance(hn.layers[d][0].linear[1], torch.nn.Dropout) and hn.layers[d][0].linear[1].p == 0.1
    plain = OrderedDict((key.replace("linear.2", "linear.1"), value) for key, value in module.items())
    torch.save({d: (plain, plain), "layer_structure": [1.0, 2.0, 1.0], "activation_func": "linear",
                "dropout_structure": [0.0, -0.1, 0.0]}, tmp_path / "negative.pt")
    assert load_hypernetwork(tmp_path / "negative.pt").spec.dropout_structure == [0, 0, 0]
    torch.save({d: (plain, plain), "layer_structure": [1.0, 2.0, 1.0], "dropout_structure": [0.0, 0.1]},
               tmp_path / "short.pt")
    with pytest.raises(HypernetFileError, match="dropout_structure needs 3 entries"):
        load_hypernetwork(tmp_path / "short.pt")


class NotAHypernetwork:
    pass


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/hypernet_studio_pwned",))


def test_refuses_unsafe_and_foreign_files(tmp_path):
    torch.save({768: NotAHypernetwork()}, tmp_path / "custom.pt")
    with pytest.raises(HypernetFileError, match="unsafe"):
        load_hypernetwork(tmp_path / "custom.pt")
    marker = "/tmp/hypernet_studio_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({768: Evil()}, handle)
    with pytest.raises(HypernetFileError, match="evil.pt") as refused:
        load_hypernetwork(tmp_path / "evil.pt")
    assert not os.path.exists(marker)
    # torch's own text advises retrying with weights_only=False; never pass that on to users
    assert "False" not in str(refused.value) and "will likely succeed" not in str(refused.value)
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "ckpt.pt")
    with pytest.raises(HypernetFileError, match="not a hypernetwork"):
        load_hypernetwork(tmp_path / "ckpt.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(HypernetFileError, match="text.pt"):
        load_hypernetwork(tmp_path / "text.pt")
    torch.save({4: _legacy_state()[4], "layer_structure": [1, 3, 1]}, tmp_path / "mismatch.pt")
    with pytest.raises(HypernetFileError, match="do not match"):
        load_hypernetwork(tmp_path / "mismatch.pt")
    with pytest.raises(FileNotFoundError):
        load_hypernetwork(tmp_path / "missing.pt")


def test_never_writes_nan_and_leaves_no_file(tmp_path):
    hn = Hypernetwork.build(HypernetSpec(sizes=[4]), seed=0)
    with torch.no_grad():
        hn.layers[4][1].linear[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        save_hypernetwork(hn, tmp_path / "nan.pt")
    assert list(tmp_path.iterdir()) == []


def test_safetensors_scheme_and_conversion_round_trip(tmp_path):
    from safetensors import safe_open

    hn = Hypernetwork.build(HypernetSpec(activation="relu", layer_norm=True, sizes=[16, 8]), seed=3, name="conv")
    pt = save_hypernetwork(hn, tmp_path / "conv.pt")
    st = file_format.convert_hypernetwork_file(pt, tmp_path / "conv.safetensors")
    with safe_open(str(st), "pt") as handle:
        assert handle.metadata()["format"] == "hypernet-studio.hypernetwork"
        assert "16.k.linear.0.weight" in handle.keys() and "8.v.linear.4.bias" in handle.keys()
    back = file_format.convert_hypernetwork_file(st, tmp_path / "back.pt")
    a, b = torch.load(pt, weights_only=True), torch.load(back, weights_only=True)
    assert list(a) == list(b)
    for key in a:
        if isinstance(key, int):
            for sa, sb in zip(a[key], b[key]):
                assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
        else:
            assert a[key] == b[key]
    with pytest.raises(FileExistsError):
        file_format.convert_hypernetwork_file(pt, back)
    with pytest.raises(ValueError, match=r"\.pt or \.safetensors"):
        file_format.convert_hypernetwork_file(pt, tmp_path / "conv.txt")
    assert not (tmp_path / "conv.txt").exists()
    with pytest.raises(ValueError, match="extension"):
        save_hypernetwork(hn, tmp_path / "x.pt", format="safetensors")
