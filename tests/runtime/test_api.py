"""run_workflow_file: the in-process API other tests use, on the shipped txt2img workflow."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypernet_studio.nodes import comfy_adapter
from hypernet_studio.runtime.api import run_workflow_file
from hypernet_studio.runtime.executor import Executor
from hypernet_studio.runtime.validation import PromptValidationError
from hypernet_studio.runtime.workflow import WorkflowError

TXT2IMG = Path(__file__).resolve().parents[2] / "workflows" / "txt2img.json"


def test_rerun_with_new_seed_reuses_loader_and_text_encodes(tmp_path):
    executor = Executor()
    before = comfy_adapter.HEADLESS.base_dir
    first = run_workflow_file(TXT2IMG, {"3.steps": 1, "9.filename_prefix": "a"}, base_dir=tmp_path,
                              executor=executor)
    assert comfy_adapter.HEADLESS.base_dir == before  # settings apply for the call only
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
