"""Every shipped workflow is laid out exactly as ComfyUI's editor expects it.

The runtime's converter is lenient about a missing control_after_generate value, but the real
frontend is not: one value missing after a seed shifts every later widget (found by loading
train_hypernet.json into the real ComfyUI UI). So the shipped files are checked strictly."""
import json
from pathlib import Path

import pytest

from hypernet_studio.runtime.nodeinfo import node_inputs
from hypernet_studio.runtime.registry import build_registry

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def test_there_are_workflows():
    assert len(WORKFLOWS) >= 3


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_widgets_values_match_the_editor_layout(path):
    registry, _ = build_registry(include_standins=True)
    workflow = json.loads(path.read_text())
    assert workflow.get("version") == 0.4
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        cls = registry[node["type"]]
        expected: list[str] = []
        for info in node_inputs(cls).values():
            if not info.is_widget:
                continue
            expected.append(info.name)
            if info.has_control_after_generate:
                expected.append("<control>")
            if info.has_upload_button:
                expected.append("<upload>")
        values = node.get("widgets_values", [])
        assert len(values) == len(expected), (path.name, node["id"], node["type"], expected, values)
        for name, value in zip(expected, values):
            if name == "<control>":
                assert value in CONTROL_VALUES, (path.name, node["id"], value)


# The editor draws a node's title bar above `pos` (LiteGraph.NODE_TITLE_HEIGHT, 30 px in frontend
# 1.35); a slot row is 20 px, a widget row 20 px + 4 px spacing; the node adds 6 px, and 8 more
# below its widgets (LGraphNode.computeSize).
TITLE_BAR, SLOT_ROW, WIDGET_ROW, NODE_PADDING, WIDGETS_PADDING = 30, 20, 24, 6, 8
MIN_GAP = 10  # px between two nodes, so neither covers the other's edge or title


def _rectangle(node):
    (x, y), (width, height) = node["pos"], node["size"]
    return x, y - TITLE_BAR, x + width, y + height


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_no_node_covers_another(path):
    """Issue 17: in train_hypernet.json the Spec node covered Load Images' last widgets."""
    nodes = json.loads(path.read_text())["nodes"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            ax0, ay0, ax1, ay1 = _rectangle(a)
            bx0, by0, bx1, by1 = _rectangle(b)
            apart = ax1 + MIN_GAP <= bx0 or bx1 + MIN_GAP <= ax0 or ay1 + MIN_GAP <= by0 or by1 + MIN_GAP <= ay0
            assert apart, f"{path.name}: node {a['id']} ({a['type']}) and node {b['id']} ({b['type']}) overlap"


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_groups_hold_their_nodes_whole_and_keep_their_titles_free(path):
    """A node that reaches into a group lies inside it, below the group's title (font_size * 1.4 px
    in the editor); groups do not overlap each other."""
    workflow = json.loads(path.read_text())
    groups = []
    for group in workflow.get("groups", []):
        x, y, width, height = group["bounding"]
        groups.append((x, y, x + width, y + height))
        body = (x, y + group.get("font_size", 24) * 1.4, x + width, y + height)
        for node in workflow["nodes"]:
            rectangle = _rectangle(node)
            if _overlap(rectangle, groups[-1]):
                inside = (body[0] <= rectangle[0] and body[1] <= rectangle[1] and rectangle[2] <= body[2]
                          and rectangle[3] <= body[3])
                assert inside, f"{path.name}: node {node['id']} ({node['type']}) sticks out of '{group['title']}'"
    for i, a in enumerate(groups):
        assert not any(_overlap(a, b) for b in groups[i + 1:]), path.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_node_is_saved_at_least_as_tall_as_the_editor_draws_it(path):
    """The editor grows a node that is saved smaller than its slots and widgets need, and a grown
    node can cover the one below it; so each saved height is at least that need (a lower bound:
    multiline text boxes and the chart are taller than one row)."""
    registry, _ = build_registry(include_standins=True)
    for node in json.loads(path.read_text())["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        cls = registry[node["type"]]
        inputs = node_inputs(cls).values()
        sockets = sum(1 for info in inputs if not info.is_widget)
        widgets = len(node.get("widgets_values", []))
        need = (SLOT_ROW * max(sockets, len(cls.RETURN_TYPES), 1) + NODE_PADDING
                + (WIDGET_ROW * widgets + WIDGETS_PADDING if widgets else 0))
        assert node["size"][1] >= need, (path.name, node["id"], node["type"], node["size"], need)
