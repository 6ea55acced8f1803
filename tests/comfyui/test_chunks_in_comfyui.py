"""The chunked prep workflow inside a real ComfyUI: it passes queue-time validation for every
chunk, and a chunk past the last is refused there (the editor's increment runs on after it)."""
import json
import uuid

import pytest
from PIL import Image

from hypernet_studio.runtime.workflow import ui_to_api

from .conftest import REPO_ROOT, run

pytestmark = pytest.mark.comfyui


@pytest.fixture()
def chunked_prompt(comfyui, tmp_path):
    """workflows/dataset_prep_big.json in API format over five pictures in chunks of two."""
    (tmp_path / "deepbooru").mkdir()
    (tmp_path / "deepbooru" / "model-resnet_custom_v3.pt").write_bytes(b"")  # validation checks the name
    comfyui.folder_paths.add_model_folder_path("deepbooru", str(tmp_path / "deepbooru"))
    pictures = tmp_path / "input" / "dataset_raw"
    pictures.mkdir(parents=True)
    for index in range(5):
        Image.new("RGB", (64, 64), (200, 40 * index, 20)).save(pictures / f"{index}.png")
    comfyui.folder_paths.set_input_directory(str(tmp_path / "input"))
    workflow = json.loads((REPO_ROOT / "workflows" / "dataset_prep_big.json").read_text())
    prompt = ui_to_api(workflow, comfyui.nodes.NODE_CLASS_MAPPINGS)
    (load,) = [node for node in prompt.values() if node["class_type"] == "HN_LoadImages"]
    load["inputs"]["chunk_size"] = 2
    return prompt, load


def test_every_chunk_passes_validation_and_the_one_after_the_last_is_refused(comfyui, chunked_prompt):
    prompt, load = chunked_prompt
    for chunk in range(3):
        load["inputs"]["chunk"] = chunk
        valid, error, outputs, node_errors = run(comfyui.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
        assert valid, (error, node_errors)
    load["inputs"]["chunk"] = 3
    valid, error, outputs, node_errors = run(comfyui.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    assert not valid and "the 5 selected files make 3 chunk(s) of 2, numbered 0-2" in json.dumps(node_errors)
