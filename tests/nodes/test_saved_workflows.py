"""A workflow saved before new widgets were added still loads: every old value in its old input,
the new inputs at their defaults (UI format stores widget values by position)."""
import json
from pathlib import Path

from hypernet_studio.runtime.registry import build_registry
from hypernet_studio.runtime.workflow import parse_workflow

from .test_interface_frozen import SNAPSHOT, _is_widget

FIXTURE = Path(__file__).with_name("fixtures") / "train_hypernet_saved_v0.1.json"


def test_a_train_hypernet_workflow_saved_before_new_widgets_keeps_every_value(headless_dirs):
    registry = build_registry(include_standins=True)[0]
    saved = json.loads(FIXTURE.read_text())
    prompt, _ = parse_workflow(saved, registry)
    node = next(n for n in saved["nodes"] if n["type"] == "HN_TrainHypernet")
    # The fixture predates every optional widget (the snapshot holds those added since as well).
    old_widgets = [e["name"] for e in SNAPSHOT["HN_TrainHypernet"]["inputs"] if _is_widget(e)
                   and e["section"] == "required"]
    values = [v for v in node["widgets_values"] if v not in ("fixed", "increment", "decrement", "randomize")]
    assert len(values) == len(old_widgets)
    inputs = prompt[str(node["id"])]["inputs"]
    for name, value in zip(old_widgets, values):
        assert inputs[name] == value, name
    declared = registry["HN_TrainHypernet"].INPUT_TYPES()
    new_widgets = [name for name, spec in declared["optional"].items()
                   if (spec[0] in ("BOOLEAN", "INT", "FLOAT", "STRING") or isinstance(spec[0], list))
                   and not spec[1].get("forceInput")]
    assert new_widgets, "this test guards the widgets added after the first release"
    assert new_widgets[-1] == "cache_folder"
    for name in new_widgets:
        default = declared["optional"][name][1]["default"]
        assert inputs.get(name, default) == default, name


def test_a_load_images_node_saved_before_max_side_loads_and_runs_with_its_default(headless_dirs):
    import numpy as np
    from PIL import Image

    from hypernet_studio.hypernet.preprocess.image_folder import MAX_SIDE_DEFAULT

    registry = build_registry(include_standins=True)[0]
    saved = json.loads(FIXTURE.read_text())
    prompt, _ = parse_workflow(saved, registry)
    node = next(n for n in saved["nodes"] if n["type"] == "HN_LoadImages")
    old_widgets = [e["name"] for e in SNAPSHOT["HN_LoadImages"]["inputs"] if _is_widget(e)
                   and e["section"] == "required"]
    assert len(node["widgets_values"]) == len(old_widgets), "the fixture predates max_side"
    inputs = prompt[str(node["id"])]["inputs"]
    assert [inputs[name] for name in old_widgets] == node["widgets_values"]
    declared = registry["HN_LoadImages"].INPUT_TYPES()["optional"]["max_side"]
    assert inputs.get("max_side", declared[1]["default"]) == MAX_SIDE_DEFAULT
    folder = headless_dirs / "input" / inputs["folder"]
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((MAX_SIDE_DEFAULT + 100, 500, 3), np.uint8)).save(folder / "tall.png")
    images = registry["HN_LoadImages"]().load(**inputs)["result"][0]  # as ComfyUI calls it: keywords
    assert max(images[0].shape[1:3]) == MAX_SIDE_DEFAULT


def test_a_workflow_saved_while_images_and_captions_were_required_still_links_and_validates_them(headless_dirs):
    # images and captions moved from the end of "required" to the front of "optional" (a
    # training_set may replace them): the saved links, by socket slot, must land on them as before.
    from hypernet_studio.runtime.workflow_checks import validate_prompt

    registry = build_registry(include_standins=True)[0]
    saved = json.loads(FIXTURE.read_text())
    node = next(n for n in saved["nodes"] if n["type"] == "HN_TrainHypernet")
    assert [s["name"] for s in node["inputs"]][:5] == ["model", "clip", "vae", "images", "captions"]
    prompt, _ = parse_workflow(saved, registry)
    inputs = prompt[str(node["id"])]["inputs"]
    assert inputs["images"] == ["2", 0] and inputs["captions"] == ["2", 2] and inputs["masks"] == ["2", 1]
    assert "training_set" not in inputs
    issues = [i for i in validate_prompt(prompt, registry).issues if i.node_id == str(node["id"])]
    assert issues == [], issues
    sockets = [name for name, spec in {**registry["HN_TrainHypernet"].INPUT_TYPES()["required"],
                                       **registry["HN_TrainHypernet"].INPUT_TYPES()["optional"]}.items()
               if isinstance(spec[0], str) and spec[0] not in ("BOOLEAN", "INT", "FLOAT", "STRING")
               or spec[1].get("forceInput")]
    assert sockets[:5] == ["model", "clip", "vae", "images", "captions"], "the sockets keep their slots"
