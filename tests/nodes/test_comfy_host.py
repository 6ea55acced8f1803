"""The nodes inside ComfyUI (faked folder layout, see fake_comfyui.py): every call goes to ComfyUI's
API, and a workflow from any client of a shared server reads only inside ComfyUI's folders."""
import pytest
import torch
from PIL import Image

from hypernet_studio.nodes import dataset, model
from hypernet_studio.nodes.host import ALLOWED_DIRS_ENV, HOST


def _images(folder, count=2):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(folder / f"{index}.png")
    return folder


def test_load_images_reads_under_input_and_output(comfyui):
    _images(comfyui.root / "input" / "set")
    _images(comfyui.root / "output" / "prepared")
    node = dataset.LoadImagesNode
    assert node.VALIDATE_INPUTS("set", "white") is True
    assert node.VALIDATE_INPUTS(str(comfyui.root / "output" / "prepared"), "white") is True
    assert node().load("set", False, ".txt", False, 0, 0, "white", 100.0)["result"][4] == 2


@pytest.mark.parametrize("folder", ["../secret", "set/../../secret", "/etc", "{outside}", "{outside_missing}"])
def test_load_images_refuses_folders_outside_with_the_same_words(comfyui, tmp_path, folder):
    outside = _images(tmp_path / "private")
    folder = folder.format(outside=outside, outside_missing=tmp_path / "nothing_here")
    verdict = dataset.LoadImagesNode.VALIDATE_INPUTS(folder, "white")
    assert verdict.startswith("input 'folder': ") and folder in verdict
    assert "does not exist" not in verdict and "not a directory" not in verdict, "nothing about what is there"
    assert "'..' is not allowed" in verdict or "outside the folders this server reads from" in verdict
    with pytest.raises(ValueError, match="HN_LoadImages, input 'folder'"):
        dataset.LoadImagesNode().load(folder, False, ".txt", False, 0, 0, "white", 100.0)


def test_the_owner_can_allow_more_folders(comfyui, tmp_path, monkeypatch):
    shared = _images(tmp_path / "shared" / "set")
    assert dataset.LoadImagesNode.VALIDATE_INPUTS(str(shared), "white") is not True
    monkeypatch.setenv(ALLOWED_DIRS_ENV, str(tmp_path / "shared"))
    assert dataset.LoadImagesNode.VALIDATE_INPUTS(str(shared), "white") is True


def test_deepbooru_reads_model_files_only_from_its_folder(comfyui, tmp_path):
    from ..hypernet.taggers.deepbooru_weights import random_state_dict

    outside = tmp_path / "elsewhere.pt"
    torch.save(random_state_dict(num_tags=3), outside)
    verdicts = [dataset.DeepbooruTagNode.VALIDATE_INPUTS(["x.pt"], [str(path)])
                for path in (outside, tmp_path / "missing.pt", "../elsewhere.pt")]
    assert all(v.startswith("input 'model_path': must name a file inside the deepbooru models folder")
               for v in verdicts), verdicts
    assert len({v.split(":", 1)[1] for v in verdicts}) == 1, "the same words whether the file exists or not"
    inside = comfyui.root / "models" / "deepbooru" / "mine.pt"
    inside.parent.mkdir(parents=True)
    torch.save(random_state_dict(num_tags=3), inside)
    assert dataset.DeepbooruTagNode.VALIDATE_INPUTS(["x.pt"], [str(inside)]) is True


def test_folders_are_registered_and_step_files_listed(comfyui):
    assert {"deepbooru", "wd14_tagger", "facedetect"} <= set(comfyui.folder_names_and_paths)
    step_file = comfyui.root / "output" / "hypernet_training" / "style" / "style-100.pt"
    step_file.parent.mkdir(parents=True)
    step_file.write_bytes(b"")
    (comfyui.root / "models" / "hypernetworks" / "a.pt").write_bytes(b"")
    choices = model.LoadHypernetNode.INPUT_TYPES()["required"]["hypernetwork_name"][0]
    assert choices == ["a.pt", "style/style-100.pt"]
    assert HOST.model_folders("hypernetworks")[0] == comfyui.root / "models" / "hypernetworks", "saves go there"
    assert HOST.resolve_model("hypernetworks", "style/style-100.pt") == step_file


def test_progress_events_node_ids_and_interrupts_go_to_comfyui(comfyui):
    comfyui.executing_node = "12"
    assert HOST.current_node_id() == "12"
    HOST.progress_bar(5).update_absolute(2, 5)
    HOST.send_event("hypernet.train_step", {"step": 1})
    HOST.send_progress_text("saved", "12")
    assert ("progress", "12", 2, 5) in comfyui.sent and ("sync", "hypernet.train_step", {"step": 1}, "client") in \
        comfyui.sent and ("text", "saved", "12") in comfyui.sent
    comfyui.interrupted = True
    assert HOST.interrupt_requested()
    with pytest.raises(Exception) as caught:
        HOST.throw_if_interrupted()
    assert HOST.is_interrupt(caught.value)


def test_errors_inside_comfyui_name_the_executing_node(comfyui):
    comfyui.executing_node = "5"
    with pytest.raises(ValueError, match=r"^node 5 \(HN_LoadImages\), input 'background'"):
        dataset.LoadImagesNode().load("set", False, ".txt", False, 0, 0, "no-colour", 100.0)
