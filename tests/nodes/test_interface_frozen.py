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


def _socket_made_optional(old: dict, new: dict) -> bool:
    """A socket may stop being required once something else can stand in for it (Train Hypernet's
    images and captions, since a training_set can replace them), if it stays where it was among the
    sockets: moved from the end of "required" to the front of "optional", it keeps its slot in a
    saved UI workflow (sockets take no widget values, so no widget value moves) and its name in an
    API one; a workflow that links it runs as before, and one that links nothing in its place is
    refused by VALIDATE_INPUTS. A widget never changes section, and nothing becomes required."""
    return not _is_widget(old) and old["section"] == "required" and new["section"] == "optional"


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
        if _socket_made_optional(entry, now):
            now = {**now, "section": "required"}
        # A combo stores its value by name: it may offer more choices, never fewer.
        assert set(entry.get("options", ())) <= set(now.get("options", ())), (node_id, entry["name"])
        assert {k: v for k, v in now.items() if k != "options"} == {k: v for k, v in entry.items() if k != "options"}, \
            (node_id, entry["name"])
    old_widgets = [e["name"] for e in old["inputs"] if _is_widget(e)]
    new_widgets = [e["name"] for e in new["inputs"] if _is_widget(e)]
    assert new_widgets[:len(old_widgets)] == old_widgets, f"{node_id}: widget positions moved"
    # UI files link a socket by its slot among the sockets, so the old sockets keep their order too.
    old_sockets = [e["name"] for e in old["inputs"] if not _is_widget(e) and e["section"] != "hidden"]
    assert [e["name"] for e in new["inputs"] if e["name"] in set(old_sockets)] == old_sockets, \
        f"{node_id}: socket slots moved"
    for key in ("outputs", "output_names", "output_is_list"):
        assert new[key][:len(old[key])] == old[key], (node_id, key)
