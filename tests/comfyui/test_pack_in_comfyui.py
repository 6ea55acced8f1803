"""The pack inside a real ComfyUI: every node registered, bad inputs refused at queue time."""
import json
import uuid

import pytest
from PIL import Image

from hypernet_studio import NODE_CLASS_MAPPINGS
from hypernet_studio.runtime.workflow import ui_to_api

from .conftest import REPO_ROOT, run

pytestmark = pytest.mark.comfyui


def test_the_pack_loads_and_registers_every_node(comfyui):
    registered = comfyui.nodes.NODE_CLASS_MAPPINGS
    ours = sorted(NODE_CLASS_MAPPINGS)
    assert ours and all(name.startswith("HN_") for name in ours)
    assert [name for name in ours if name not in registered] == []
    # ComfyUI imported its own copy, as it does from custom_nodes/, not the tests' one.
    assert registered["HN_TrainHypernet"] is not NODE_CLASS_MAPPINGS["HN_TrainHypernet"]


@pytest.fixture()
def training_prompt(comfyui, tmp_path):
    """workflows/train_hypernet.json in API format, against a checkpoint name ComfyUI lists (an
    empty file: validation checks names only) and the example pictures."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "validation_only.safetensors").write_bytes(b"")
    comfyui.folder_paths.add_model_folder_path("checkpoints", str(tmp_path / "checkpoints"))
    pictures = tmp_path / "input" / "train_example"
    pictures.mkdir(parents=True)
    for index in range(2):
        Image.new("RGB", (64, 64), (200, 40 * index, 20)).save(pictures / f"{index}.png")
        (pictures / f"{index}.txt").write_text("red, square")
    comfyui.folder_paths.set_input_directory(str(tmp_path / "input"))
    workflow = json.loads((REPO_ROOT / "workflows" / "train_hypernet.json").read_text())
    prompt = ui_to_api(workflow, comfyui.nodes.NODE_CLASS_MAPPINGS)
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = "validation_only.safetensors"
    return prompt


def _validate(comfyui, prompt):
    return run(comfyui.execution.validate_prompt(str(uuid.uuid4()), prompt, None))


def test_the_shipped_training_workflow_passes_queue_time_validation(comfyui, training_prompt):
    valid, error, outputs, node_errors = _validate(comfyui, training_prompt)
    assert valid, (error, node_errors)


@pytest.mark.parametrize("field, value, named", [("learning_rate", "0.001:abc", "learning_rate"),
                                                 ("optimizer", "Lion9000", "optimizer"),
                                                 ("preview_seeds", "1, two", "preview_seeds")])
def test_bad_training_inputs_are_refused_at_queue_time(comfyui, training_prompt, field, value, named):
    (node_id,) = [key for key, node in training_prompt.items() if node["class_type"] == "HN_TrainHypernet"]
    training_prompt[node_id]["inputs"][field] = value
    valid, error, outputs, node_errors = _validate(comfyui, training_prompt)
    # ComfyUI still queues the outputs that do not depend on the refused node (Hypernet Spec's
    # size display); the training and everything after it never run.
    runs = {training_prompt[output]["class_type"] for output in outputs}
    assert runs <= {"HN_HypernetSpec"}, runs
    messages = json.dumps(node_errors[node_id]["errors"])
    assert named in messages, messages
