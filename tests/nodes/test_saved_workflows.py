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
    old_widgets = [e["name"] for e in SNAPSHOT["HN_TrainHypernet"]["inputs"] if _is_widget(e)]
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
    for name in new_widgets:
        default = declared["optional"][name][1]["default"]
        assert inputs.get(name, default) == default, name
