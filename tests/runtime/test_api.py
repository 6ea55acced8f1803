"""run_workflow_file: the in-process API other tests use, on the shipped txt2img workflow."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypernet_studio.runtime.api import run_workflow_file
from hypernet_studio.runtime.executor import Executor
from hypernet_studio.runtime.headless_host import HEADLESS
from hypernet_studio.runtime.workflow import WorkflowError
from hypernet_studio.runtime.workflow_checks import PromptValidationError

TXT2IMG = Path(__file__).resolve().parents[2] / "workflows" / "txt2img.json"


def test_rerun_with_new_seed_reuses_loader_and_text_encodes(tmp_path):
    executor = Executor()
    before = HEADLESS.base_dir
    first = run_workflow_file(TXT2IMG, {"3.steps": 1, "9.filename_prefix": "a"}, base_dir=tmp_path,
                              executor=executor)
    assert HEADLESS.base_dir == before  # settings apply for the call only
    assert first.files == [tmp_path / "output" / first.files[0].name] and first.files[0].is_file()
    assert set(first.executed) == {"3", "4", "5", "6", "7", "8", "9"}

    second = run_workflow_file(TXT2IMG, {"3.steps": 1, "3.seed": 7, "9.filename_prefix": "a"},
                               base_dir=tmp_path, executor=executor)
    assert sorted(second.cached) == ["4", "5", "6", "7"]
    assert second.executed == ["3", "8", "9"]
    assert second.files[0] != first.files[0]  # the counter moved on, nothing overwritten
    with Image.open(first.files[0]) as a, Image.open(second.files[0]) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))  # another seed, another image


def test_errors_surface_as_typed_exceptions(tmp_path):
    with pytest.raises(WorkflowError, match="has no input 'stepz'"):
        run_workflow_file(TXT2IMG, {"3.stepz": 1}, base_dir=tmp_path)
    with pytest.raises(PromptValidationError) as info:
        run_workflow_file(TXT2IMG, {"3.steps": 0, "3.sampler_name": "nope"}, base_dir=tmp_path)
    assert {(i.node_id, i.input_name, i.type) for i in info.value.issues} == {
        ("3", "steps", "value_smaller_than_min"), ("3", "sampler_name", "value_not_in_list")}


def test_workflow_saved_by_comfyui_editor_converts_like_the_frontend_and_runs(headless_dirs):
    """A UI file in the editor's own layout (widget sockets, upload button, seed primitive,
    VAE reroute, bypassed CLIPSetLastLayer, muted preview, note) against the stand-ins."""
    from hypernet_studio.runtime.workflow import load_workflow

    fixture = Path(__file__).parent / "fixtures" / "comfyui_img2img.json"
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(headless_dirs / "input" / "example.png")

    prompt, ui = load_workflow(fixture)
    assert {node_id: (node["class_type"], node["inputs"]) for node_id, node in prompt.items()} == {
        "1": ("LoadImage", {"image": "example.png"}),
        "2": ("VAEEncode", {"pixels": ["1", 0], "vae": ["4", 2]}),
        "3": ("KSampler", {"seed": 99, "steps": 2, "cfg": 7.5, "sampler_name": "euler_ancestral",
                           "scheduler": "karras", "denoise": 0.6, "model": ["4", 0], "positive": ["6", 0],
                           "negative": ["7", 0], "latent_image": ["2", 0]}),
        "4": ("CheckpointLoaderSimple", {"ckpt_name": "tiny-sd (built-in)"}),
        "6": ("CLIPTextEncode", {"text": "a lighthouse on a cliff", "clip": ["4", 1]}),
        "7": ("CLIPTextEncode", {"text": "blurry", "clip": ["4", 1]}),
        "8": ("VAEDecode", {"samples": ["3", 0], "vae": ["4", 2]}),
        "9": ("SaveImage", {"filename_prefix": "img2img", "images": ["8", 0]}),
    }

    result = run_workflow_file(fixture)
    assert [path.parent for path in result.files] == [headless_dirs / "output"]
    with Image.open(result.files[0]) as image:
        assert image.size == (64, 64)
        assert json.loads(image.text["prompt"])["3"]["inputs"]["seed"] == 99
    assert not any((headless_dirs / "temp").iterdir())  # the muted preview did not run
