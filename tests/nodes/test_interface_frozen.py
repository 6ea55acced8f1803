"""Saved and shared workflows depend on each node's ID, inputs (names, order, types, defaults),
outputs and category. UI-format files store widget values by position, so every widget of the
snapshot must still come first, in its old order; new inputs may only follow. Combos store
their value by name, so they may gain choices (a new built-in model, say) but never lose one."""
import json
from pathlib import Path

import pytest

from hypernet_studio.runtime.registry import build_registry

from .interface import describe_registry

SNAPSHOT = json.loads((Path(__file__).with_name("interface_snapshot.json")).read_text())
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(entry: dict) -> bool:
    return entry["section"] != "hidden" and entry["type"] in WIDGET_TYPES and not entry.get("forceInput")


@pytest.fixture(scope="module")
def current(tmp_path_factory):
    from hypernet_studio.runtime.api import headless_settings

    with headless_settings(base_dir=tmp_path_factory.mktemp("empty")):
        classes, names = build_registry(include_standins=True)
        return describe_registry(classes, names)


@pytest.mark.parametrize("node_id", sorted(SNAPSHOT))
def test_node_keeps_its_public_interface(current, node_id):
    old = SNAPSHOT[node_id]
    assert node_id in current, f"{node_id} disappeared"
    new = current[node_id]
    for key in ("display_name", "category", "output_node", "input_is_list"):
        assert new[key] == old[key], (node_id, key)
    new_by_name = {entry["name"]: entry for entry in new["inputs"]}
    for entry in old["inputs"]:
        now = new_by_name.get(entry["name"])
        assert now is not None, (node_id, entry["name"], "removed")
        # A combo stores its value by name: it may offer more choices, never fewer.
        assert set(entry.get("options", ())) <= set(now.get("options", ())), (node_id, entry["name"])
        assert {k: v for k, v in now.items() if k != "options"} == {k: v for k, v in entry.items() if k != "options"}, \
            (node_id, entry["name"])
    old_widgets = [e["name"] for e in old["inputs"] if _is_widget(e)]
    new_widgets = [e["name"] for e in new["inputs"] if _is_widget(e)]
    assert new_widgets[:len(old_widgets)] == old_widgets, f"{node_id}: widget positions moved"
    old_order = [e["name"] for e in old["inputs"]]
    assert [e["name"] for e in new["inputs"] if e["name"] in set(old_order)] == old_order
    for key in ("outputs", "output_names", "output_is_list"):
        assert new[key][:len(old[key])] == old[key], (node_id, key)
