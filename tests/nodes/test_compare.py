"""Compare Hypernets headless, on the tiny model at 64 px with 1-2 sampling steps: a cell is the
picture of Load + Apply + KSampler + VAE Decode, strength 0 is plain sampling, an interrupt keeps
the cells done, bad inputs are refused at queue time, and the shipped workflow runs."""
import json
from pathlib import Path

import pytest
import torch

from hypernet_studio.hypernet.compare.grid_plan import NOT_SAMPLED_GREY
from hypernet_studio.hypernet.image_grid import grid_layout
from hypernet_studio.nodes import compare
from hypernet_studio.nodes import model as model_nodes
from hypernet_studio.runtime import cli, standins
from hypernet_studio.runtime.examples import make_random_hypernetwork
from hypernet_studio.runtime.headless_host import HEADLESS, InterruptedByUser

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
TINY_WIDTHS = [32, 48, 64]
SETTINGS = dict(sampler_name="euler", scheduler="normal", steps=2, cfg=7.0, width=64, height=64)


@pytest.fixture(scope="module")
def tiny():
    """The tiny model's MODEL, CLIP and VAE, loaded once for the module (as a graph loads them once)."""
    with torch.inference_mode():
        return standins.CheckpointLoaderSimple().load_checkpoint("tiny-sd (built-in)")


def _run_folder(base: Path, name: str = "cat", steps=(5, 10)) -> Path:
    """A training run's folder with random step files NAME-STEP.pt (what save_every writes)."""
    folder = base / "output" / "hypernet_training" / name
    folder.mkdir(parents=True)
    for step in steps:
        make_random_hypernetwork(folder / f"{name}-{step}.pt", sizes=TINY_WIDTHS, seed=step)
    return folder


def _widgets(**changed):
    values = dict(runs="cat", every_nth=1, hypernetwork_names="", strengths="0, 0.7", prompts="a red square",
                  negative="blurry", seeds="3, 4", transpose=False, **SETTINGS)
    values.update(changed)
    return {name: [value] for name, value in values.items()}  # INPUT_IS_LIST: every widget as a list


def _compare(tiny, **changed):
    model, clip, vae = tiny
    with torch.inference_mode():  # as the runtime's executor and ComfyUI run every node
        return compare.CompareHypernetsNode().compare([model], [clip], [vae], **_widgets(**changed))


def _layout(**changed):
    """Where the node puts each cell, from its own plan (the labels are the library's)."""
    widgets = {name: value[0] for name, value in _widgets(**changed).items()}
    plan = compare.grid_request(widgets, []).plan
    return grid_layout(plan.row_labels, plan.column_labels, 64, 64)


def _graph_picture(tiny, hypernetwork_name, strength, prompt, negative, seed):
    """Load Hypernet + Apply Hypernet + KSampler + VAE Decode, node by node, as a graph runs them."""
    with torch.inference_mode():
        return _graph_nodes(tiny, hypernetwork_name, strength, prompt, negative, seed)


def _graph_nodes(tiny, hypernetwork_name, strength, prompt, negative, seed):
    model, clip, vae = tiny
    if hypernetwork_name is not None:
        (network,) = model_nodes.LoadHypernetNode().load(hypernetwork_name)
        (model,) = model_nodes.ApplyHypernetNode().apply(model, network, strength)
    (positive,) = standins.CLIPTextEncode().encode(clip, prompt)
    (negative,) = standins.CLIPTextEncode().encode(clip, negative)
    (latent,) = standins.EmptyLatentImage().generate(64, 64, 1)
    (latent,) = standins.KSampler().sample(model, seed, 2, 7.0, "euler", "normal", positive, negative, latent)
    return standins.VAEDecode().decode(vae, latent)[0]


def test_cells_equal_the_graph_pictures_and_strength_0_is_plain_sampling(headless_dirs, tiny):
    _run_folder(headless_dirs)
    out = _compare(tiny, seeds="3", transpose=True)
    grid, images, table = out["result"]
    # columns (transposed): no hypernetwork, cat-5 at 0.7, cat-10 at 0.7; one row: seed 3
    assert len(images) == 3 and all(image.shape == (1, 64, 64, 3) for image in images)
    plain = _graph_picture(tiny, None, 0.0, "a red square", "blurry", 3)
    assert torch.equal(images[0], plain), "strength 0 = the base model, same seed"
    cell = _graph_picture(tiny, "cat/cat-10.pt", 0.7, "a red square", "blurry", 3)
    assert torch.equal(images[2], cell), "pixel-identical to the graph with the same file, strength, prompt, seed"
    assert not torch.equal(images[2], images[1]), "each file gives its own picture"
    layout = grid_layout(["a red square\nseed 3"], ["no hypernetwork", "cat-5\nstrength 0.7", "cat-10\nstrength 0.7"],
                         64, 64)
    assert grid.shape == (1, layout.height, layout.width, 3)
    saved = headless_dirs / "output" / "hypernet_compare"
    assert sorted(p.name for p in saved.iterdir()) == ["compare_00001.csv", "compare_00001.png"]
    assert out["ui"]["images"] == [{"filename": "compare_00001.png", "subfolder": "hypernet_compare",
                                    "type": "output"}]
    assert table == out["ui"]["text"][0] and "cat-10" in table
    assert (saved / "compare_00001.csv").read_text().splitlines()[0].startswith("network,step,strength")


def test_each_prompt_is_encoded_once_and_the_model_is_never_copied(headless_dirs, tiny, monkeypatch):
    _run_folder(headless_dirs, steps=(5, 10, 15))
    encoded, clones = [], []
    real_encode, real_clone = standins.CLIPTextEncode.encode, type(tiny[0]).clone
    monkeypatch.setattr(standins.CLIPTextEncode, "encode",
                        lambda self, clip, text: encoded.append(text) or real_encode(self, clip, text))
    monkeypatch.setattr(type(tiny[0]), "clone", lambda self: clones.append(1) or real_clone(self))
    _compare(tiny, prompts="one\ntwo", seeds="1, 2", steps=1, strengths="0, 1", every_nth=2)
    assert sorted(encoded) == ["blurry", "one", "two"], "each prompt once for the whole grid"
    assert len(clones) == 2, "one patched clone per network and strength (every 2nd, cat-10, and the last, cat-15)"


def test_an_interrupt_keeps_the_cells_done_and_says_how_many(headless_dirs, tiny, monkeypatch):
    _run_folder(headless_dirs)
    real_sample, events = standins.KSampler.sample, []

    def sample_then_interrupt(self, *args, **kwargs):
        result = real_sample(self, *args, **kwargs)
        if len(sampled) == 2:
            HEADLESS.interrupt.set()  # the user presses stop during the third cell
        sampled.append(1)
        return result

    sampled: list = []
    monkeypatch.setattr(standins.KSampler, "sample", sample_then_interrupt)
    monkeypatch.setattr(HEADLESS, "event_sink", lambda name, data: events.append((name, data)))
    with pytest.raises(InterruptedByUser):
        _compare(tiny, steps=1)
    texts = [data["text"] for name, data in events if name == "progress_text"]
    assert any("3 of 6 cells done" in text for text in texts), texts
    import numpy as np
    from PIL import Image

    png = headless_dirs / "output" / "hypernet_compare" / "compare_00001.png"
    assert png.is_file() and str(png) in texts[-1]
    pixels = np.asarray(Image.open(png).convert("RGB"))
    layout = _layout(steps=1)
    grey = round(NOT_SAMPLED_GREY * 255)

    def blank(row, column):
        x0, y0, x1, y1 = layout.cell_box(row, column)
        return bool((np.abs(pixels[y0:y1, x0:x1].astype(int) - grey) <= 1).all())

    assert [blank(0, 0), blank(0, 1), blank(1, 0), blank(1, 1), blank(2, 0), blank(2, 1)] == \
        [False, False, False, True, True, True]


def test_connected_networks_and_named_files_are_compared_with_a_run(headless_dirs, tiny):
    from hypernet_studio.hypernet.file_format import load_hypernetwork

    _run_folder(headless_dirs, steps=(5,))
    named = make_random_hypernetwork(headless_dirs / "models" / "hypernetworks" / "dog.pt", sizes=TINY_WIDTHS, seed=9)
    connected = load_hypernetwork(named)
    connected.filename = None  # as it comes from a trainer that has not saved it anywhere
    connected.name = "fresh"
    model, clip, vae = tiny
    out = compare.CompareHypernetsNode().compare([model], [clip], [vae], hypernetworks=[connected],
                                                 **_widgets(hypernetwork_names="dog.pt", strengths="1", seeds="1",
                                                            steps=1))
    table = out["result"][2]
    rows = [line.split()[0] for line in table.splitlines()[1:]]
    assert rows == ["fresh", "cat-5", "dog"]
    images = out["result"][1]
    assert torch.equal(images[0], images[2]), "the same weights give the same picture, connected or named"


def _compare_prompt(base: Path, **inputs) -> Path:
    widgets = {name: value[0] for name, value in _widgets(**inputs).items()}
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd (built-in)"}},
              "2": {"class_type": "HN_CompareHypernets",
                    "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], **widgets}}}
    path = base / "compare.json"
    path.write_text(json.dumps(prompt))
    return path


REFUSED = [
    (dict(strengths="0, strong"), "input 'strengths'"),
    (dict(strengths="11"), "input 'strengths'"),
    (dict(prompts=" \n  \n"), "input 'prompts'"),
    (dict(seeds="-1"), "input 'seeds'"),
    (dict(runs="no_such_run"), "no_such_run"),
    (dict(hypernetwork_names="missing.pt"), "input 'hypernetwork_names': 'missing.pt' not found; looked in"),
    (dict(every_nth=0), "input 'every_nth'"),
    (dict(width=4096, height=4096, seeds="1, 2, 3, 4, 5, 6"), "megapixels"),
]


@pytest.mark.parametrize("inputs,expected", REFUSED, ids=[next(iter(c[0])) + str(i) for i, c in enumerate(REFUSED)])
def test_bad_inputs_are_refused_at_validation_before_any_model_loads(headless_dirs, capsys, monkeypatch, inputs,
                                                                    expected):
    from hypernet_studio.hypernet.sd import loading

    _run_folder(headless_dirs)
    calls = []
    monkeypatch.setattr(loading, "load_components", lambda *a, **k: calls.append(a))
    path = _compare_prompt(headless_dirs, **inputs)
    assert cli.main(["validate", str(path), "--base-dir", str(headless_dirs)]) == 2
    err = capsys.readouterr().err
    assert "node 2 (HN_CompareHypernets)" in err and expected in err, err
    assert calls == [], "nothing was loaded"


def test_a_missing_run_names_the_folder_searched(headless_dirs, capsys):
    path = _compare_prompt(headless_dirs, runs="no_such_run")
    assert cli.main(["validate", str(path), "--base-dir", str(headless_dirs)]) == 2
    assert str(headless_dirs / "output" / "hypernet_training" / "no_such_run") in capsys.readouterr().err


def test_inside_comfyui_a_run_outside_its_folders_is_refused(comfyui, tmp_path):
    outside = tmp_path / "elsewhere" / "cat"  # beside ComfyUI's folders (tmp_path/comfy), not in them
    outside.mkdir(parents=True)
    values = {name: value for name, value in _widgets(runs=str(outside)).items()
              if name in ("runs", "every_nth", "hypernetwork_names", "strengths", "prompts", "seeds", "width",
                          "height")}
    verdict = compare.CompareHypernetsNode.VALIDATE_INPUTS(**values)
    assert isinstance(verdict, str) and verdict.startswith("input 'runs'") and "outside the folders" in verdict


def test_the_shipped_workflow_compares_the_example_runs_step_files(headless_dirs):
    from hypernet_studio.runtime.api import run_workflow_file

    _run_folder(headless_dirs, "example-hypernet", steps=(20, 40))  # what train_hypernet.json saves
    result = run_workflow_file(WORKFLOWS / "compare_steps.json", {"2.steps": 1}, base_dir=headless_dirs)
    grid, images, table = result.outputs["2"]
    assert len(images) == 10, "(no hypernetwork + 2 step files x 2 strengths) x 2 prompts"
    assert [line.split()[:3] for line in table[0].splitlines()[1:]] == [
        ["no", "hypernetwork", "-"], ["example-hypernet-20", "20", "0.5"], ["example-hypernet-20", "20", "1"],
        ["example-hypernet-40", "40", "0.5"], ["example-hypernet-40", "40", "1"]]
    assert any(p.name == "compare_00001.png" for p in result.files)


def test_inside_comfyui_the_node_samples_with_comfyuis_own_nodes(comfyui, monkeypatch):
    import sys
    import types

    class ComfyKSampler:  # ComfyUI's top-level nodes.py, reduced to what the node asks of it
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"sampler_name": (["euler", "dpmpp_2m"], {}), "scheduler": (["karras"], {})}}

    comfy_nodes = types.ModuleType("nodes")
    comfy_nodes.NODE_CLASS_MAPPINGS = {"KSampler": ComfyKSampler}
    monkeypatch.setitem(sys.modules, "nodes", comfy_nodes)
    from hypernet_studio.nodes.host import HOST

    assert HOST.builtin_node("KSampler") is ComfyKSampler
    required = compare.CompareHypernetsNode.INPUT_TYPES()["required"]
    assert required["sampler_name"][0] == ["euler", "dpmpp_2m"] and required["scheduler"][0] == ["karras"]
