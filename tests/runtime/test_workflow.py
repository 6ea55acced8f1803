"""UI -> API conversion on hand-written UI fixtures, and workflow file handling."""
import json

import pytest

from hypernet_studio.runtime.executor import Executor
from hypernet_studio.runtime.workflow import WorkflowError, apply_overrides, load_workflow, parse_override, ui_to_api


def test_control_after_generate_upload_and_converted_widgets(registry, load_fixture):
    prompt = ui_to_api(load_fixture("ui_controls.json"), registry)

    assert prompt["1"]["inputs"] == {"value": 5, "seed": 42}  # "randomize" is not a value
    assert prompt["3"]["inputs"] == {"value": 9, "seed": 0}
    # seed is a converted widget whose link wins over its saved value 7; the link's
    # target_slot 0 is node.inputs[0] ("seed"), not INPUT_TYPES position 0 ("value").
    assert prompt["2"]["inputs"] == {"value": ["1", 0], "seed": ["3", 0], "steps": 30,
                                     "sampler_name": "heun", "denoise": 0.5}
    assert prompt["2"]["_meta"] == {"title": "My Sampler"}
    # image_upload's "image" button value and the option-driven control value are skipped
    assert prompt["4"]["inputs"] == {"image": "b.png", "variant": 3, "note": "hello"}
    assert prompt["5"]["inputs"] == {"value": ["2", 0], "tag": ["4", 0]}
    # saved without the hidden control value: still mapped by count
    assert prompt["8"]["inputs"] == {"value": ["9", 0], "seed": 11, "steps": 25, "sampler_name": "ddim",
                                     "denoise": 1.0}
    # arrays are wrapped so they cannot be mistaken for links
    assert prompt["11"]["inputs"]["tags"] == {"__value__": ["a", "b"]}
    # notes never reach the prompt
    assert set(prompt) == {"1", "2", "3", "4", "5", "8", "9", "10", "11"}


def test_routing_reroute_primitive_bypass_and_mute(registry, load_fixture):
    prompt = ui_to_api(load_fixture("ui_routing.json"), registry)

    assert prompt["3"]["inputs"] == {"a": ["1", 0], "b": 40}  # two reroutes; the primitive's value wins
    assert "4" not in prompt and "7" not in prompt and "22" not in prompt and "32" not in prompt
    assert prompt["5"]["inputs"] == {"a": ["3", 0], "b": 100}  # through bypassed 4; muted 7's link dropped
    assert prompt["23"]["inputs"]["value"] == ["21", 0]  # bypassed Pair, output 1 -> input 1 (same slot)
    assert prompt["24"]["inputs"]["value"] == ["20", 0]
    assert prompt["33"]["inputs"]["value"] == ["31", 0]  # bypassed Label: the first INT input, not slot 0
    assert not any(node["class_type"] in ("Reroute", "PrimitiveNode") for node in prompt.values())


def test_schema_1_object_links_convert_like_version_0_4(registry, load_fixture):
    old = ui_to_api(load_fixture("ui_routing.json"), registry)
    new = ui_to_api(load_fixture("ui_routing_schema1.json"), registry)
    assert new == old


def test_converted_workflow_runs_with_expected_values(registry, load_fixture, calls):
    result = Executor(registry).run(ui_to_api(load_fixture("ui_routing.json"), registry))
    assert result.ui["6"]["values"] == [(2 + 40) + 100]
    assert result.ui["23"]["values"] == [2]
    assert result.ui["24"]["values"] == [1]
    assert result.ui["33"]["values"] == [7]


def test_array_widget_value_is_unwrapped_for_the_node(registry, load_fixture, calls):
    result = Executor(registry).run(ui_to_api(load_fixture("ui_controls.json"), registry))
    assert result.ui["10"]["values"] == ["a,b"]
    assert result.ui["5"]["values"] == [5 + 9 + 30]  # Sampler: value (node 1) + seed (node 3) + steps


def test_link_to_a_node_missing_from_the_file_is_kept_for_validation(registry, load_fixture):
    workflow = load_fixture("ui_routing.json")
    workflow["links"].append([99, 77, 0, 6, 0, "INT"])
    next(n for n in workflow["nodes"] if n["id"] == 6)["inputs"][0]["link"] = 99
    prompt = ui_to_api(workflow, registry)
    assert prompt["6"]["inputs"]["value"] == ["77", 0]


def test_subgraph_node_is_refused_clearly(registry, load_fixture):
    workflow = load_fixture("ui_routing.json")
    workflow["definitions"] = {"subgraphs": [{"id": "a1b2c3d4-0000-4000-8000-00000000beef"}]}
    workflow["nodes"].append({"id": 90, "type": "a1b2c3d4-0000-4000-8000-00000000beef", "mode": 0,
                              "inputs": [], "outputs": []})
    with pytest.raises(WorkflowError, match="node 90 is a subgraph"):
        ui_to_api(workflow, registry)


def test_load_workflow_detects_both_formats(tmp_path, registry, load_fixture):
    ui_file = tmp_path / "ui.json"
    ui_file.write_text(json.dumps(load_fixture("ui_routing.json")))
    prompt, ui = load_workflow(ui_file, registry)
    assert ui is not None and prompt["3"]["inputs"]["b"] == 40

    api_file = tmp_path / "api.json"
    api_file.write_text(json.dumps(prompt))
    api_prompt, api_ui = load_workflow(api_file, registry)
    assert api_ui is None and api_prompt == prompt


def test_malformed_json_names_file_line_and_column(tmp_path, registry):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "1": {"class_type": "Const",\n  "inputs": {]\n}')
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, registry)
    assert str(path) in str(info.value) and "line 3" in str(info.value) and "column" in str(info.value)


def test_missing_file_and_wrong_shape_are_clear(tmp_path, registry):
    with pytest.raises(WorkflowError, match="file not found"):
        load_workflow(tmp_path / "nope.json", registry)
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(WorkflowError, match="not a workflow"):
        load_workflow(path, registry)
    path.write_text('{"1": {"inputs": {}}}')
    with pytest.raises(WorkflowError, match="node '1'.*class_type"):
        load_workflow(path, registry)


def test_overrides_parse_json_and_reject_unknown_targets(registry, load_fixture):
    prompt = ui_to_api(load_fixture("ui_controls.json"), registry)
    assert parse_override("3.seed=42") == ("3", "seed", 42)
    assert parse_override("4.note=hello world") == ("4", "note", "hello world")
    assert parse_override('4.note="7"') == ("4", "note", "7")

    changed = apply_overrides(prompt, ["1.seed=7", "4.note=hi"], registry)
    assert changed["1"]["inputs"]["seed"] == 7 and changed["4"]["inputs"]["note"] == "hi"
    assert prompt["1"]["inputs"]["seed"] == 42  # the original is untouched
    assert apply_overrides(prompt, {"1": {"value": 9}}, registry)["1"]["inputs"]["value"] == 9
    assert apply_overrides(prompt, {"1.value": 8}, registry)["1"]["inputs"]["value"] == 8

    with pytest.raises(WorkflowError, match="no node 42"):
        apply_overrides(prompt, ["42.seed=1"], registry)
    with pytest.raises(WorkflowError, match=r"node 1 \(Const\) has no input 'sed'"):
        apply_overrides(prompt, ["1.sed=1"], registry)
    with pytest.raises(WorkflowError, match="is linked to node 3"):
        apply_overrides(prompt, ["2.seed=1"], registry)
    with pytest.raises(WorkflowError, match="ID.input=value"):
        apply_overrides(prompt, ["seed=1"], registry)
