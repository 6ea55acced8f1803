"""Compare Hypernets inside a real ComfyUI, on ComfyUI's SD1.5-shaped random checkpoint
(random_sd15_small.safetensors, which the harness writes into the checkout's models/checkpoints):
workflows/compare_steps.json passes ComfyUI's queue-time validation, its grid is drawn through
ComfyUI's own sampling, and a cell is the very picture of Load Hypernet + Apply Hypernet +
ComfyUI's KSampler + VAE Decode with the same file, strength, prompt and seed."""
import json
import uuid
from pathlib import Path

import pytest
import torch

from hypernet_studio.runtime.examples import make_random_hypernetwork
from hypernet_studio.runtime.workflow import ui_to_api

from .conftest import REPO_ROOT, run

pytestmark = pytest.mark.comfyui

CHECKPOINT = "random_sd15_small.safetensors"
SD1_WIDTHS = [768, 320, 640, 1280]
RUN = "example-hypernet"


@pytest.fixture(scope="module")
def checkpoint(comfyui):
    """MODEL, CLIP and VAE of the SD1.5-shaped checkpoint, through ComfyUI's own loader."""
    if CHECKPOINT not in comfyui.folder_paths.get_filename_list("checkpoints"):
        pytest.fail(f"{CHECKPOINT} is not in ComfyUI's checkpoints folder: the harness's setup.sh writes it "
                    "(make_random_sd15.py --variant small)", pytrace=False)
    return comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT)


@pytest.fixture()
def output_folder(comfyui, tmp_path):
    """ComfyUI's output folder moved to tmp_path, holding the example run's two step files (narrow
    SD1 networks: every attention width, a small file)."""
    saved = comfyui.folder_paths.get_output_directory()
    comfyui.folder_paths.set_output_directory(str(tmp_path))
    folder = tmp_path / "hypernet_training" / RUN
    folder.mkdir(parents=True)
    # Load Hypernet lists the step files from the training folder of the output folder it started with
    comfyui.folder_paths.add_model_folder_path("hypernetworks", str(tmp_path / "hypernet_training"))
    for step in (20, 40):
        make_random_hypernetwork(folder / f"{RUN}-{step}.pt", sizes=SD1_WIDTHS, layer_structure="1, 0.5, 1",
                                 seed=step)
    yield tmp_path
    comfyui.folder_paths.set_output_directory(saved)


def _workflow_prompt(comfyui) -> dict:
    workflow = json.loads((REPO_ROOT / "workflows" / "compare_steps.json").read_text())
    prompt = ui_to_api(workflow, comfyui.nodes.NODE_CLASS_MAPPINGS)
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = CHECKPOINT
    return prompt


def test_the_workflow_passes_validation_and_a_bad_strength_is_refused(comfyui, output_folder):
    prompt = _workflow_prompt(comfyui)
    valid, error, outputs, node_errors = run(comfyui.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    assert valid, (error, node_errors)
    (node_id,) = [key for key, node in prompt.items() if node["class_type"] == "HN_CompareHypernets"]
    prompt[node_id]["inputs"]["strengths"] = "0, lots"
    valid, error, outputs, node_errors = run(comfyui.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    assert not valid and "strengths" in json.dumps(node_errors[node_id]["errors"])


def _comfy_cell(comfyui, checkpoint, file_name, strength, prompt, seed, steps):
    """Load Hypernet + Apply Hypernet (ComfyUI's copy of the pack) + ComfyUI's KSampler + VAE Decode."""
    model, clip, vae = checkpoint
    nodes = comfyui.nodes
    (network,) = nodes.NODE_CLASS_MAPPINGS["HN_LoadHypernet"]().load(file_name)
    (model,) = nodes.NODE_CLASS_MAPPINGS["HN_ApplyHypernet"]().apply(model, network, strength)
    (positive,) = nodes.CLIPTextEncode().encode(clip, prompt)
    (negative,) = nodes.CLIPTextEncode().encode(clip, "")
    (latent,) = nodes.EmptyLatentImage().generate(64, 64, 1)
    (latent,) = nodes.KSampler().sample(model, seed, steps, 7.0, "euler", "normal", positive, negative, latent)
    return nodes.VAEDecode().decode(vae, latent)[0]


def test_the_workflows_grid_is_drawn_with_comfyuis_sampling(comfyui, checkpoint, output_folder):
    prompt = _workflow_prompt(comfyui)
    (node_id,) = [key for key, node in prompt.items() if node["class_type"] == "HN_CompareHypernets"]
    widgets = {name: value for name, value in prompt[node_id]["inputs"].items() if not isinstance(value, list)}
    widgets.update(steps=2, prompts=widgets["prompts"].splitlines()[0])  # one prompt, 2 steps: 5 cells
    model, clip, vae = checkpoint
    node = comfyui.nodes.NODE_CLASS_MAPPINGS["HN_CompareHypernets"]()
    with torch.inference_mode():
        out = node.compare([model], [clip], [vae], **{name: [value] for name, value in widgets.items()})
        grid, images, table = out["result"]
        assert len(images) == 5, "no hypernetwork + 2 step files x strengths 0.5 and 1"
        expected = _comfy_cell(comfyui, checkpoint, f"{RUN}/{RUN}-40.pt", 1.0, widgets["prompts"], 42, 2)
        plain = _comfy_cell(comfyui, checkpoint, f"{RUN}/{RUN}-40.pt", 0.0, widgets["prompts"], 42, 2)
    assert torch.equal(images[4], expected), "the cell equals ComfyUI's KSampler + VAE Decode with that file"
    assert torch.equal(images[0], plain), "strength 0: the base model, same seed"
    assert not torch.equal(images[4], images[0])
    saved = Path(output_folder) / "hypernet_compare"
    assert sorted(p.name for p in saved.iterdir()) == ["compare_00001.csv", "compare_00001.png"]
    assert f"{RUN}-40" in table
