"""Load Training Set -> Train Hypernet inside a real ComfyUI: ComfyUI's queue-time validation
hands VALIDATE_INPUTS a linked socket as None and leaves an unlinked one out, which is how Train
Hypernet refuses neither or both of images and training_set; and the pair trains through
ComfyUI's own SD1.5 UNet (random weights; stand-in CLIP and VAE, as in test_training_in_comfyui)."""
import json
import uuid

import pytest
from PIL import Image

from hypernet_studio.runtime.workflow import ui_to_api

from .conftest import REPO_ROOT, SD15_UNET, random_weights_patcher, run
from .test_training_in_comfyui import StandInCLIP, StandInVAE

pytestmark = pytest.mark.comfyui


@pytest.fixture()
def folders(comfyui, tmp_path):
    """A prepared folder under ComfyUI's output folder, and a checkpoint name ComfyUI lists (an
    empty file: validation checks names only)."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "validation_only.safetensors").write_bytes(b"")
    comfyui.folder_paths.add_model_folder_path("checkpoints", str(tmp_path / "checkpoints"))
    comfyui.folder_paths.add_model_folder_path("hypernetworks", str(tmp_path / "hypernetworks"), is_default=True)
    prepared = tmp_path / "output" / "prepared"
    prepared.mkdir(parents=True)
    for index in range(2):
        Image.new("RGB", (64 + 32 * index, 64), (200, 40 * index, 20)).save(prepared / f"{index:05d}-x.png")
        (prepared / f"{index:05d}-x.txt").write_text(f"red, square {index}")
    comfyui.folder_paths.set_input_directory(str(tmp_path / "input"))
    comfyui.folder_paths.set_output_directory(str(tmp_path / "output"))
    return tmp_path


def _prompt(comfyui, links):
    """workflows/train_hypernet.json in API format, with a Load Training Set (node 90) and Train
    Hypernet's picture sockets set to `links`."""
    prompt = ui_to_api(json.loads((REPO_ROOT / "workflows" / "train_hypernet.json").read_text()),
                       comfyui.nodes.NODE_CLASS_MAPPINGS)
    prompt["90"] = {"class_type": "HN_LoadTrainingSet", "inputs": {
        "folder": "prepared", "caption_extension": ".txt", "background": "white", "max_side": 1536,
        "max_megapixels": 100.0}}
    (train,) = [node for node in prompt.values() if node["class_type"] == "HN_TrainHypernet"]
    (images_from,) = {train["inputs"][name][0] for name in ("images", "captions", "masks")}
    for name in ("images", "captions", "masks"):
        train["inputs"].pop(name)
    sources = {"training_set": ["90", 0], "images": [images_from, 0], "captions": [images_from, 2]}
    train["inputs"].update({name: sources[name] for name in links})
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = "validation_only.safetensors"
    return prompt


@pytest.mark.parametrize("links, refused", [(("training_set",), None),
                                            (("images", "captions"), None),
                                            ((), "connect the images and captions to train on"),
                                            (("training_set", "images", "captions"), "a training_set is connected")])
def test_comfyui_validation_wants_images_or_a_training_set(comfyui, folders, links, refused):
    prompt = _prompt(comfyui, links)
    (train_id,) = [key for key, node in prompt.items() if node["class_type"] == "HN_TrainHypernet"]
    valid, error, outputs, node_errors = run(comfyui.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    if refused is None:
        assert valid, (error, node_errors)
    else:
        assert refused in json.dumps(node_errors[train_id]["errors"]), node_errors


def test_load_training_set_trains_in_comfyui(comfyui, folders):
    import comfy.supported_models
    import torch

    registered = comfyui.nodes.NODE_CLASS_MAPPINGS
    training_set, count = registered["HN_LoadTrainingSet"]().load("prepared", ".txt", "white", 1536, 100.0)["result"]
    assert count == 2
    patcher = random_weights_patcher(comfyui, comfy.supported_models.SD15(dict(SD15_UNET)))
    declared = registered["HN_TrainHypernet"].INPUT_TYPES()
    widgets = {name: [spec[1]["default"]] for group in ("required", "optional")
               for name, spec in declared[group].items() if "default" in spec[1]}
    widgets.update(name=["from-folder"], steps=[1], learning_rate=["0.0001"], resolution=[64], save_every=[0],
                   preview_every=[0], csv_every=[0], prompt_template=["hypernetwork"])
    spec_widgets = {name: entry[1].get("default") for name, entry in
                    registered["HN_HypernetSpec"].INPUT_TYPES()["required"].items()}
    spec = registered["HN_HypernetSpec"]().make_spec(**spec_widgets)["result"][0]
    with torch.inference_mode():
        shown = registered["HN_TrainHypernet"]().train(model=[patcher], clip=[StandInCLIP()], vae=[StandInVAE()],
                                                       hypernet_spec=[spec], training_set=[training_set], **widgets)
    (network,), (saved_path,) = shown["result"][0], shown["result"][3]  # one run: one-item lists
    assert network.step == 1 and (folders / "hypernetworks" / "from-folder.pt").is_file(), saved_path
    assert shown["ui"]["text"][0].startswith("from-folder: step 1"), shown["ui"]["text"]
