"""Load Training Set and Train Hypernet's training_set: folder lookup and read policy, refusals at
queue time, and Save Dataset -> Load Training Set -> Train Hypernet headless."""
import numpy as np
import pytest
from PIL import Image

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.nodes.train import TrainHypernetNode
from hypernet_studio.nodes.training_set import LoadTrainingSetNode
from hypernet_studio.runtime.api import run_prompt
from hypernet_studio.runtime.registry import build_registry
from hypernet_studio.runtime.workflow_checks import validate_prompt


def _pictures(folder, count=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (64, 64 + 32 * (index % 2), 3), dtype=np.uint8)).save(
            folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"picture {index}")
    return folder


def test_a_name_is_looked_up_in_the_input_folder_then_the_output_folder(headless_dirs):
    _pictures(headless_dirs / "output" / "prepared", 2)
    assert LoadTrainingSetNode.VALIDATE_INPUTS("prepared", "white", 1536) is True
    shown = LoadTrainingSetNode().load("prepared", ".txt", "white", 1536, 100.0)
    training_set, count = shown["result"]
    assert count == 2 and training_set.folder == headless_dirs / "output" / "prepared"
    assert shown["ui"]["text"][0].startswith("2 pictures (2 images with repeats) in ")
    _pictures(headless_dirs / "input" / "prepared", 3)
    assert LoadTrainingSetNode().load("prepared", ".txt", "white", 1536, 100.0)["result"][1] == 3, "input first"


def test_missing_folders_and_folders_without_pictures_are_refused_at_queue_time(headless_dirs):
    verdict = LoadTrainingSetNode.VALIDATE_INPUTS("nowhere", "white", 1536)
    assert verdict.startswith("input 'folder': 'nowhere' is not a folder; searched ")
    assert str(headless_dirs / "input" / "nowhere") in verdict and str(headless_dirs / "output" / "nowhere") in verdict
    (headless_dirs / "input" / "empty").mkdir()
    assert "has no pictures" in LoadTrainingSetNode.VALIDATE_INPUTS("empty", "white", 1536)
    assert LoadTrainingSetNode.VALIDATE_INPUTS(str(headless_dirs / "gone"), "white", 1536).endswith(
        "does not exist. Run `hypernet-studio examples` to write the inputs the shipped workflows read.")
    _pictures(headless_dirs / "input" / "set", 1)
    assert "input 'background'" in LoadTrainingSetNode.VALIDATE_INPUTS("set", "no such colour", 1536)
    assert "input 'max_side'" in LoadTrainingSetNode.VALIDATE_INPUTS("set", "white", 10)


@pytest.mark.parametrize("folder", ["../secret", "set/../../secret", "{outside}", "{outside_missing}"])
def test_a_shared_server_reads_only_its_own_folders(comfyui, tmp_path, folder):
    outside = _pictures(tmp_path / "private", 1)
    folder = folder.format(outside=outside, outside_missing=tmp_path / "nothing_here")
    verdict = LoadTrainingSetNode.VALIDATE_INPUTS(folder, "white", 1536)
    assert verdict.startswith("input 'folder': ") and "does not exist" not in verdict
    assert "'..' is not allowed" in verdict or "outside the folders this server reads from" in verdict
    with pytest.raises(ValueError, match="HN_LoadTrainingSet, input 'folder'"):
        LoadTrainingSetNode().load(folder, ".txt", "white", 1536, 100.0)


def test_under_comfyui_save_datasets_folder_is_read(comfyui):
    _pictures(comfyui.root / "output" / "dataset", 2)
    assert LoadTrainingSetNode.VALIDATE_INPUTS(str(comfyui.root / "output" / "dataset"), "white", 1536) is True
    assert LoadTrainingSetNode.VALIDATE_INPUTS("dataset", "white", 1536) is True


def _train_inputs(**links):
    declared = TrainHypernetNode.INPUT_TYPES()
    widgets = {name: spec[1]["default"] for group in ("required", "optional") for name, spec in declared[group].items()
               if "default" in spec[1]}
    widgets.update(name="from-folder", steps=2, learning_rate="0.001", resolution=64, save_every=0, preview_every=0,
                   csv_every=0, prompt_template="hypernetwork")
    return {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "hypernet_spec": ["4", 0], **widgets, **links}


def _prompt(**train_links):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd (built-in)"}},
        "2": {"class_type": "HN_LoadImages", "inputs": {"folder": "raw", "recursive": False,
                                                        "caption_extension": ".txt", "kohya_repeats": False,
                                                        "offset": 0, "limit": 0, "background": "white",
                                                        "max_megapixels": 100.0}},
        "3": {"class_type": "HN_SaveDataset", "inputs": {"images": ["2", 0], "captions": ["2", 2], "masks": ["2", 1],
                                                         "stems": ["2", 3], "folder": "prepared",
                                                         "naming": "index-stem", "save_alpha": True}},
        "4": {"class_type": "HN_HypernetSpec", "inputs": {}},
        "5": {"class_type": "HN_LoadTrainingSet", "inputs": {"folder": ["3", 0], "caption_extension": ".txt",
                                                             "background": "white", "max_side": 1536,
                                                             "max_megapixels": 100.0}},
        "6": {"class_type": "HN_TrainHypernet", "inputs": _train_inputs(**train_links)},
    }


@pytest.mark.parametrize("links,refusal", [
    ({}, "input 'images': connect the images and captions to train on"),
    ({"images": ["2", 0]}, "input 'captions': connect the captions of the images"),
    ({"training_set": ["5", 0], "images": ["2", 0], "captions": ["2", 2]}, "input 'images': a training_set is "
                                                                           "connected"),
    ({"training_set": ["5", 0], "masks": ["2", 1]}, "input 'masks': a training_set is connected"),
])
def test_train_hypernet_wants_images_with_captions_or_a_training_set(headless_dirs, links, refusal):
    registry = build_registry(include_standins=True)[0]
    prompt = _prompt(**links)
    prompt["4"]["inputs"] = {name: spec[1].get("default") for name, spec in
                             registry["HN_HypernetSpec"].INPUT_TYPES()["required"].items()}
    issues = [i for i in validate_prompt(prompt, registry).issues if i.node_id == "6"]
    assert [f"input '{i.input_name}': {i.message}" for i in issues if refusal.split(":")[0] in
            f"input '{i.input_name}'"][0].startswith(refusal), issues


def test_save_dataset_then_load_training_set_then_train(headless_dirs):
    registry = build_registry(include_standins=True)[0]
    _pictures(headless_dirs / "input" / "raw", 3)
    prompt = _prompt(training_set=["5", 0])
    prompt["4"]["inputs"] = {name: spec[1].get("default") for name, spec in
                             registry["HN_HypernetSpec"].INPUT_TYPES()["required"].items()}
    assert [i for i in validate_prompt(prompt, registry).issues] == []
    result = run_prompt(prompt)
    assert load_hypernetwork(headless_dirs / "models" / "hypernetworks" / "from-folder.pt").step == 2
    assert result.ui["5"]["text"][0].startswith(f"3 pictures (3 images with repeats) in {headless_dirs / 'output'}")
    assert sorted(p.name for p in (headless_dirs / "output" / "prepared").glob("*.png")) == \
        ["00000-0.png", "00001-1.png", "00002-2.png"]


def test_train_hypernet_refuses_the_same_at_run_time_before_any_model_is_touched(headless_dirs, as_node_7):
    import torch

    _pictures(headless_dirs / "input" / "set", 1)
    training_set = LoadTrainingSetNode().load("set", ".txt", "white", 1536, 100.0)["result"][0]
    widgets = {name: [value] for name, value in _train_inputs().items() if not isinstance(value, list)}
    node = r"^node 7 \(HN_TrainHypernet\), "
    unusable = dict(model=[None], clip=[None], vae=[None], **widgets)  # refused before they are used
    with pytest.raises(ValueError, match=node + "input 'images': a training_set is connected"):
        TrainHypernetNode().train(**unusable, images=[torch.zeros(1, 8, 8, 3)], training_set=[training_set])
    with pytest.raises(ValueError, match=node + "input 'images': connect the images and captions"):
        TrainHypernetNode().train(**unusable)
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components
    from hypernet_studio.hypernet.spec import HypernetSpec

    model, clip, vae = headless_objects(build_tiny_components(seed=0))
    with pytest.raises(ValueError, match=node + "input 'images': the dataset is empty"), torch.inference_mode():
        TrainHypernetNode().train(**{**unusable, "model": [model], "clip": [clip], "vae": [vae]}, images=[],
                                  captions=[], hypernet_spec=[HypernetSpec()])  # linked, a filter kept nothing
