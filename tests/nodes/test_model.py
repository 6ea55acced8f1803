"""Hypernet Spec / Load / Save / Apply nodes, headless."""
import re

import pytest
import torch

from hypernet_studio.hypernet.file_format import load_hypernetwork, save_hypernetwork
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.nodes import model as nodes

SPEC_DEFAULTS = dict(target_family="SD1", custom_sizes="768, 320, 640, 1280", layer_structure="1, 2, 1",
                     activation="linear", weight_init="Normal", layer_norm=False, use_dropout=False,
                     dropout_structure="0, 0, 0", activate_output=False, init_seed=0)


def test_node_contract():
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("HN_") and cls.CATEGORY.startswith("hypernetwork/")
        assert cls.DESCRIPTION and callable(getattr(cls, cls.FUNCTION))
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in cls.RETURN_NAMES)
        for section in cls.INPUT_TYPES().values():
            for name, (_, options) in section.items():
                assert options.get("tooltip"), (node_id, name)
    widgets = nodes.HypernetSpecNode.INPUT_TYPES()["required"]
    assert [k for k in widgets] == list(SPEC_DEFAULTS)
    for name, value in SPEC_DEFAULTS.items():
        if name != "target_family":
            assert widgets[name][1]["default"] == value, name
    strength = nodes.ApplyHypernetNode.INPUT_TYPES()["required"]["strength"][1]
    assert (strength["min"], strength["max"], strength["step"], strength["default"]) == (-10.0, 10.0, 0.01, 1.0)


def test_spec_node_reports_size_and_builds_spec():
    out = nodes.HypernetSpecNode().make_spec(**SPEC_DEFAULTS)
    spec = out["result"][0]
    assert isinstance(spec, HypernetSpec) and spec.sizes == [768, 320, 640, 1280] and spec.init_seed == 0
    assert "21,939,840 parameters" in out["ui"]["text"][0] and "83.69 MiB" in out["ui"]["text"][0]
    make_spec = nodes.HypernetSpecNode().make_spec
    auto = make_spec(**{**SPEC_DEFAULTS, "target_family": "auto (from model)", "init_seed": -1})
    assert auto["result"][0].sizes is None and auto["result"][0].init_seed is None
    assert "from the model" in auto["ui"]["text"][0]
    assert "on SD1: 21,939,840 parameters" in auto["ui"]["text"][0]
    assert "on SDXL: 49,962,240 parameters, 190.59 MiB" in auto["ui"]["text"][0]
    custom = make_spec(**{**SPEC_DEFAULTS, "target_family": "custom", "custom_sizes": "32, 48"})
    assert custom["result"][0].sizes == [32, 48]
    sd2 = make_spec(**{**SPEC_DEFAULTS, "target_family": "SD2", "layer_structure": "1, 2, 2, 1"})
    assert sd2["result"][0].sizes[0] == 1024


def test_spec_node_reports_the_sdxl_size():
    out = nodes.HypernetSpecNode().make_spec(**{**SPEC_DEFAULTS, "target_family": "SDXL"})
    assert out["result"][0].sizes == [2048, 640, 1280]
    # 1,2,1 per width d: k and v, each Linear(d, 2d) + Linear(2d, d) with biases = 2 * (4d^2 + 3d).
    params = sum(2 * (4 * d * d + 3 * d) for d in (2048, 640, 1280))
    assert params == 49_962_240
    text = out["ui"]["text"][0]
    assert f"{params:,} parameters" in text and f"{4 * params / 2**20:.2f} MiB" in text and "2048, 640, 1280" in text


def test_spec_node_dropout_follows_a1111_ui():
    make = lambda **kw: nodes.HypernetSpecNode().make_spec(**{**SPEC_DEFAULTS, **kw})["result"][0]  # noqa: E731
    assert make(dropout_structure="0, 0.5, 0").dropout_structure == [0, 0, 0]  # ignored without use_dropout
    assert make(use_dropout=True, dropout_structure="0, 0.05, 0.15").dropout_structure == [0, 0.05, 0.15]
    legacy = make(use_dropout=True, dropout_structure="", layer_structure="1, 2, 2, 1")
    assert legacy.dropout_structure == [0, 0.3, 0, 0]
    with pytest.raises(ValueError, match=r"HN_HypernetSpec, input 'layer_structure': must start and end with 1"):
        make(layer_structure="2, 1")
    with pytest.raises(ValueError, match=r"HN_HypernetSpec, input 'dropout_structure': .*needs 3 entries"):
        make(use_dropout=True, dropout_structure="0, 0.1")


def _write(folder, name, seed=0):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_hypernetwork(Hypernetwork.build(HypernetSpec(sizes=[8, 4]), seed=seed), path)


def test_load_node_lists_and_loads(headless_dirs):
    folder = headless_dirs / "models" / "hypernetworks"
    _write(folder, "sub/cat.pt")
    _write(folder, "dog.safetensors")
    (folder / "notes.txt").write_text("x")
    assert nodes.LoadHypernetNode.INPUT_TYPES()["required"]["hypernetwork_name"][0] == ["dog.safetensors", "sub/cat.pt"]
    (hn,) = nodes.LoadHypernetNode().load("sub/cat.pt")
    assert isinstance(hn, Hypernetwork) and hn.sizes == [8, 4] and not hn.training
    before = nodes.LoadHypernetNode.IS_CHANGED("sub/cat.pt")
    import os
    os.utime(folder / "sub/cat.pt", ns=(1, 1))
    assert nodes.LoadHypernetNode.IS_CHANGED("sub/cat.pt") != before
    torch.save({"w": torch.zeros(1)}, folder / "bad.pt")
    with pytest.raises(ValueError, match=r"HN_LoadHypernet, input 'hypernetwork_name': .*bad.pt: not a hypernetwork"):
        nodes.LoadHypernetNode().load("bad.pt")
    missing = r"HN_LoadHypernet, input 'hypernetwork_name': .*missing.pt.*not found; looked in"
    with pytest.raises(ValueError, match=missing):
        nodes.LoadHypernetNode().load("missing.pt")


def test_save_node_counter_overwrite_and_refusals(headless_dirs):
    folder = headless_dirs / "models" / "hypernetworks"
    hn = Hypernetwork.build(HypernetSpec(sizes=[4]), seed=0, name="cat")
    save = nodes.SaveHypernetNode().save
    first = save(hn, "cat", "pt", False)["result"][0]
    second = save(hn, "cat.pt", "pt", False)["result"][0]
    assert first == str(folder / "cat.pt") and second == str(folder / "cat_00001.pt")
    assert save(hn, "cat", "pt", True)["result"][0] == first
    st = save(hn, "styles/cat", "safetensors", False)["result"][0]
    assert st == str(folder / "styles" / "cat.safetensors") and load_hypernetwork(st).name == "cat"
    for bad in ("../x", "/tmp/x", "a/../../x", "", "   ", "..", "styles/", ".pt"):
        with pytest.raises(ValueError, match=r"HN_SaveHypernet, input 'filename': "):
            save(hn, bad, "pt", False)
    assert hn.filename is None, "the node never modifies its input"
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["cat.pt", "cat.safetensors", "cat_00001.pt"]


def test_apply_node_clones(headless_dirs):
    from hypernet_studio.hypernet.sd.headless import HeadlessModel
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components

    model = HeadlessModel(build_tiny_components())
    hn = Hypernetwork.build(HypernetSpec(sizes=model.attention_widths()), seed=0)
    (patched,) = nodes.ApplyHypernetNode().apply(model, hn, 0.8)
    assert patched is not model and model.patches("attn1_patch") == []
    assert len(patched.patches("attn1_patch")) == 1 and len(patched.patches("attn2_patch")) == 1
    (same,) = nodes.ApplyHypernetNode().apply(model, hn, 0.0)
    assert same is model
    with pytest.raises(ValueError, match=r"HN_ApplyHypernet, input 'model': .*has no clone"):
        nodes.ApplyHypernetNode().apply("not a model", hn, 1.0)


def test_txt2img_hypernet_workflow_runs_headless(headless_dirs):
    """workflows/txt2img_hypernet.json on the tiny model, with a seeded random hypernet file."""
    from pathlib import Path

    from hypernet_studio.hypernet.sd.headless import HeadlessModel
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components
    from hypernet_studio.runtime.api import run_workflow_file
    from hypernet_studio.runtime.examples import make_random_hypernetwork

    widths = HeadlessModel(build_tiny_components()).attention_widths()
    make_random_hypernetwork(headless_dirs / "models" / "hypernetworks" / "tiny_example.pt", sizes=widths, seed=0)
    workflow = Path(__file__).resolve().parents[2] / "workflows" / "txt2img_hypernet.json"
    images = {}
    for strength in (1.0, 0.0):
        result = run_workflow_file(workflow, {"3.strength": strength, "7.steps": 2,
                                              "9.filename_prefix": f"s{strength:g}"}, base_dir=headless_dirs)
        assert {"2", "3", "7", "9"} <= set(result.executed)
        (png,) = [p for p in result.files if p.suffix == ".png"]
        images[strength] = _pixels(png)
    assert images[1.0].shape == (64, 64, 3)
    assert (images[1.0] != images[0.0]).any(), "the hypernetwork changes the picture"


def _pixels(path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))
