"""Prep on every core inside a real ComfyUI: a bad HYPERNET_STUDIO_WORKERS is refused at queue
time, Auto Crop's progress bar counts every picture in order with several workers, and the
user's interrupt (raised by ComfyUI's progress hook, as its server sets it) stops the pool."""
import uuid

import pytest
from PIL import Image

from .conftest import run

pytestmark = pytest.mark.comfyui


@pytest.fixture()
def pictures(comfyui, tmp_path):
    folder = tmp_path / "input" / "prep"
    folder.mkdir(parents=True)
    for index in range(8):
        Image.new("RGB", (96 + 8 * index, 64), (30 * index, 120, 200)).save(folder / f"{index}.png")
    comfyui.folder_paths.set_input_directory(str(tmp_path / "input"))
    return "prep"


def _defaults(node_class):
    """Every required widget of `node_class` at its default (the frontend would fill them so)."""
    return {name: options["default"] for name, (_, options) in node_class.INPUT_TYPES()["required"].items()
            if isinstance(options, dict) and "default" in options}


def _prompt(comfyui, folder):
    """Load Images -> Auto Crop (center, no faces) -> Save Dataset, in API format."""
    node_classes = comfyui.nodes.NODE_CLASS_MAPPINGS
    crop = {**_defaults(node_classes["HN_AutoCrop"]), "images": ["1", 0], "method": "center", "width": 64,
            "height": 64, "face_detector": "none"}
    save = {**_defaults(node_classes["HN_SaveDataset"]), "images": ["2", 0], "folder": "prep_out"}
    load = {**_defaults(node_classes["HN_LoadImages"]), "folder": folder}
    return {"1": {"class_type": "HN_LoadImages", "inputs": load},
            "2": {"class_type": "HN_AutoCrop", "inputs": crop},
            "3": {"class_type": "HN_SaveDataset", "inputs": save}}


def _validate(comfyui, pictures):
    return run(comfyui.execution.validate_prompt(str(uuid.uuid4()), _prompt(comfyui, pictures), None))


def test_a_bad_workers_setting_is_refused_at_queue_time(comfyui, pictures, monkeypatch):
    monkeypatch.setenv("HYPERNET_STUDIO_WORKERS", "0")
    valid, error, _, node_errors = _validate(comfyui, pictures)
    assert not valid and set(node_errors) == {"1", "2"}, (error, node_errors)
    assert all("setting HYPERNET_STUDIO_WORKERS='0': out of range" in str(node_errors[node]) for node in ("1", "2"))
    monkeypatch.setenv("HYPERNET_STUDIO_WORKERS", "2")
    valid, error, _, node_errors = _validate(comfyui, pictures)
    assert valid, (error, node_errors)


def _crop(comfyui, pictures):
    node_classes = comfyui.nodes.NODE_CLASS_MAPPINGS
    images, masks, captions, stems, *_ = node_classes["HN_LoadImages"]().load(
        pictures, False, ".txt", False, 0, 0, "white", 100.0)["result"]
    return node_classes["HN_AutoCrop"]().crop(
        images, captions, masks, stems, method=["center"], width=[48], height=[48], face_detector=["none"],
        face_model=[""])["result"]


def test_progress_counts_in_order_and_an_interrupt_stops_the_pool(comfyui, pictures, monkeypatch):
    utils, management = comfyui.comfy.utils, comfyui.model_management
    monkeypatch.setenv("HYPERNET_STUDIO_WORKERS", "3")
    seen = []

    def hook(value, total, preview, prompt_id=None, node_id=None):  # main.py's hook, minus the server
        seen.append((value, total))
        management.throw_exception_if_processing_interrupted()

    monkeypatch.setattr(utils, "PROGRESS_BAR_HOOK", hook)
    crops = _crop(comfyui, pictures)[0]
    assert len(crops) == 8 and [value for value, total in seen if total == 8] == list(range(1, 9))

    seen.clear()
    management.interrupt_current_processing(True)
    try:
        with pytest.raises(management.InterruptProcessingException):
            _crop(comfyui, pictures)
    finally:
        management.interrupt_current_processing(False)
    assert [value for value, total in seen if total == 8] == [1]
