"""Validation: every ComfyUI error type, with messages naming node id, class and input."""
import pytest

from hypernet_studio.runtime.executor import Executor
from hypernet_studio.runtime.nodeinfo import types_match
from hypernet_studio.runtime.workflow_checks import PromptValidationError, validate_prompt


def _only_issue(prompt, registry):
    result = validate_prompt(prompt, registry)
    assert len(result.issues) == 1, [str(i) for i in result.issues]
    return result.issues[0]


def _collect(value):
    return {"class_type": "Collect", "inputs": {"value": value}}


def test_valid_prompt_has_no_issues_and_coerces_constants(registry):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": "7", "seed": 3.0}}, "2": _collect(["1", 0])}
    result = validate_prompt(prompt, registry)
    assert result.ok and result.outputs == ["2"]
    assert result.prompt["1"]["inputs"] == {"value": 7, "seed": 3}
    assert isinstance(result.prompt["1"]["inputs"]["seed"], int)
    assert prompt["1"]["inputs"]["value"] == "7"  # the caller's prompt is not mutated


def test_required_input_missing(registry):
    issue = _only_issue({"1": {"class_type": "Const", "inputs": {"value": 1}}, "2": _collect(["1", 0])}, registry)
    assert issue.type == "required_input_missing"
    assert (issue.node_id, issue.class_type, issue.input_name) == ("1", "Const", "seed")
    assert str(issue).startswith("node 1 (Const), input 'seed':")


def test_bad_linked_input_missing_node_and_bad_slot(registry):
    issue = _only_issue({"2": _collect(["9", 0])}, registry)
    assert issue.type == "bad_linked_input" and "node 9" in issue.message and issue.input_name == "value"

    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1, "seed": 0}}, "2": _collect(["1", 3])}
    issue = _only_issue(prompt, registry)
    assert issue.type == "bad_linked_input" and "output 3" in issue.message and "only 1 output" in issue.message

    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1, "seed": 0}}, "2": _collect(["1", 0, 5])}
    assert _only_issue(prompt, registry).type == "bad_linked_input"


def test_return_type_mismatch(registry):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "x", "mode": "plain"}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "3": _collect(["2", 0])}
    issue = _only_issue(prompt, registry)
    assert issue.type == "return_type_mismatch" and (issue.node_id, issue.input_name) == ("2", "a")
    assert "expects INT" in issue.message and "gives STRING" in issue.message


def test_type_unions_and_wildcards():
    assert types_match("IMAGE", "IMAGE,MASK") and types_match("MASK,LATENT", "MASK")
    assert types_match("*", "MODEL") and types_match("MODEL", "*")
    assert not types_match("MODEL", "IMAGE,MASK") and not types_match("INT", "FLOAT")
    assert types_match(["a", "b"], "COMBO")


def test_union_input_accepts_a_member_type(registry):
    prompt = {"1": {"class_type": "MakeModel", "inputs": {}},
              "2": {"class_type": "UseImage", "inputs": {"image": ["1", 0]}}}
    assert _only_issue(prompt, registry).type == "return_type_mismatch"
    registry["MakeModel"] = type("MakeMask", (registry["MakeModel"],), {"RETURN_TYPES": ("MASK",)})
    assert validate_prompt(prompt, registry).ok


def test_invalid_input_type(registry):
    issue = _only_issue({"1": {"class_type": "Const", "inputs": {"value": "many", "seed": 0}},
                         "2": _collect(["1", 0])}, registry)
    assert issue.type == "invalid_input_type" and issue.input_name == "value" and "INT" in issue.message
    # a constant where a link is required
    prompt = {"2": {"class_type": "UseImage", "inputs": {"image": 5}}}
    assert _only_issue(prompt, registry).type == "invalid_input_type"


@pytest.mark.parametrize("value, kind", [(-1, "value_smaller_than_min"), (101, "value_bigger_than_max")])
def test_value_out_of_range(registry, value, kind):
    issue = _only_issue({"1": {"class_type": "Const", "inputs": {"value": value, "seed": 0}},
                         "2": _collect(["1", 0])}, registry)
    assert issue.type == kind and issue.input_name == "value" and str(value) in issue.message


def test_value_not_in_list(registry):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "x", "mode": "lower"}}, "2": _collect(["1", 0])}
    issue = _only_issue(prompt, registry)
    assert issue.type == "value_not_in_list" and issue.input_name == "mode" and "'plain'" in issue.message
    prompt = {"1": {"class_type": "Tags", "inputs": {"tags": {"__value__": ["a", "z"]}}}, "2": _collect(["1", 0])}
    assert _only_issue(prompt, registry).type == "value_not_in_list"


def test_custom_validation_receives_only_named_inputs_and_skips_range(registry, calls):
    prompt = {"1": {"class_type": "Gated", "inputs": {"size": 128, "name": "n"}}, "2": _collect(["1", 0])}
    # 128 is above max 64, but VALIDATE_INPUTS owns `size`, so only its verdict counts
    assert validate_prompt(prompt, registry).ok
    assert calls == [("Gated.VALIDATE_INPUTS", {"size": 128})]

    prompt["1"]["inputs"]["size"] = 12
    issue = _only_issue(prompt, registry)
    assert issue.type == "custom_validation_failed" and "multiple of 8" in issue.message
    assert (issue.node_id, issue.class_type) == ("1", "Gated")


def test_prompt_no_outputs(registry):
    issue = _only_issue({"1": {"class_type": "Const", "inputs": {"value": 1, "seed": 0}}}, registry)
    assert issue.type == "prompt_no_outputs"


def test_unknown_class_type_suggests_close_matches(registry):
    result = validate_prompt({"1": {"class_type": "Colect", "inputs": {}}, "2": _collect(1)}, registry)
    issue = next(i for i in result.issues if i.node_id == "1")
    assert issue.type == "invalid_prompt" and "'Colect'" in issue.message
    assert "Collect" in issue.extra_info["close_matches"] and "did you mean Collect" in issue.message


def test_only_ancestors_of_outputs_are_checked(registry):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1000, "seed": 0}},  # dangling, not an ancestor
              "2": {"class_type": "Const", "inputs": {"value": 1, "seed": 0}}, "3": _collect(["2", 0])}
    assert validate_prompt(prompt, registry).ok


def test_cycle_is_reported_per_node(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}}, "3": _collect(["2", 0])}
    issues = validate_prompt(prompt, registry).issues
    assert {i.type for i in issues} == {"dependency_cycle"} and {i.node_id for i in issues} == {"1", "2"}


def test_executor_refuses_invalid_prompt_with_every_issue(registry, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 500}}, "2": _collect(["1", 0])}
    with pytest.raises(PromptValidationError) as info:
        Executor(registry).run(prompt)
    assert {i.type for i in info.value.issues} == {"value_bigger_than_max", "required_input_missing"}
    assert "node 1 (Const), input 'value'" in str(info.value)
    assert calls == []  # nothing ran


def test_node_errors_have_comfyui_shape(registry):
    result = validate_prompt({"1": {"class_type": "Const", "inputs": {"value": 1}}, "2": _collect(["1", 0])},
                             registry)
    errors = result.node_errors()
    assert errors["1"]["class_type"] == "Const"
    assert errors["1"]["errors"][0]["type"] == "required_input_missing"
    assert errors["1"]["errors"][0]["extra_info"]["input_name"] == "seed"


def test_input_missing_because_its_source_is_muted_says_so(registry, load_fixture):
    from hypernet_studio.runtime.workflow import ui_to_api

    workflow = load_fixture("ui_routing.json")
    next(n for n in workflow["nodes"] if n["id"] == 5)["mode"] = 2
    issues = validate_prompt(ui_to_api(workflow, registry), registry).issues
    assert [(i.type, i.node_id, i.input_name) for i in issues] == [("required_input_missing", "6", "value")]
    assert "link from node 5 was dropped" in issues[0].message


def test_model_file_missing_from_an_empty_folder_is_a_validation_error(headless_dirs):
    from hypernet_studio.runtime.registry import build_registry

    registry = build_registry()[0]
    prompt = {"1": {"class_type": "HN_LoadHypernet", "inputs": {"hypernetwork_name": "gone.pt"}},
              "2": {"class_type": "HN_SaveHypernet", "inputs": {"hypernetwork": ["1", 0], "filename": "x",
                                                               "format": "pt", "overwrite": False}}}
    issue = _only_issue(prompt, registry)
    # Load Hypernet checks the file itself (VALIDATE_INPUTS), so the message says where it looked.
    assert (issue.type, issue.node_id, issue.input_name) == ("custom_validation_failed", "1", "hypernetwork_name")
    assert "'gone.pt' not found; looked in" in issue.message and str(headless_dirs / "models") in issue.message
    assert "Train Hypernet" in issue.message
