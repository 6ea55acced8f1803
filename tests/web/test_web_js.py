"""The frontend files: chart logic under node:test, glue wired to the right node ids and event."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _node_tests(name):
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed; the frontend logic tests need it")
    result = subprocess.run([node, "--test", str(REPO / "tests" / "web" / name)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_chart_core_passes_node_tests():
    assert "# pass 7" in _node_tests("chart_core.test.mjs")


def test_widget_rules_pass_node_tests():
    assert "# pass 7" in _node_tests("widget_rules.test.mjs")


def test_widget_rules_name_train_hypernet_inputs_and_choices():
    """The rules name inputs and choices by string: each must be one Train Hypernet really has."""
    from hypernet_studio.hypernet.train.config import CLIP_MODES, LR_SCHEDULERS
    from hypernet_studio.hypernet.train.templates import CUSTOM
    from hypernet_studio.nodes.train import TrainHypernetNode

    rules = (REPO / "web" / "hypernet_widget_rules.js").read_text()
    declared = TrainHypernetNode.INPUT_TYPES()
    inputs = {name for group in ("required", "optional") for name in declared.get(group, {})}
    named = set()
    for listed in re.findall(r"(?:controls|widgets): \[([^\]]*)\]", rules):
        named |= set(re.findall(r'"(\w+)"', listed))
    assert len(named) >= 10 and named <= inputs, named - inputs
    assert '"HN_TrainHypernet"' in rules
    for choice in re.findall(r'v\.\w+ [!=]== "(\w+)"', rules):
        assert choice in LR_SCHEDULERS + CLIP_MODES + (CUSTOM,), choice


def test_hiding_is_display_only():
    """The glue only flips the frontend's `hidden` flag: it never removes a widget, changes its
    type or value, or turns serialization off, so widgets_values keep every value in place."""
    glue = (REPO / "web" / "train_widgets.js").read_text()
    assert 'from "./hypernet_widget_rules.js"' in glue and "widget.hidden = hide" in glue
    for forbidden in ("splice(", ".type =", "serialize", ".value =", "removeWidget"):
        assert forbidden not in glue, forbidden


def test_glue_uses_comfyui_entry_points_and_our_names():
    chart = (REPO / "web" / "train_chart.js").read_text()
    spec = (REPO / "web" / "hypernet_spec.js").read_text()
    core = (REPO / "web" / "hypernet_chart_core.js").read_text()
    assert 'from "../../scripts/app.js"' in chart and 'from "../../scripts/api.js"' in chart
    assert '"hypernet.train_step"' in chart and '"HN_TrainHypernet"' in chart
    assert "serialize: false" in chart and "serialize: false" in spec
    # The frontend's serialize() skips a widget by `widget.serialize === false`, not by the option.
    assert "widget.serialize = false" in chart and "widget.serialize = false" in spec
    assert '"HN_HypernetSpec"' in spec and "onExecuted" in spec
    assert not re.search(r"^\s*import\b", core, re.M) and "app." not in core, "the core module stays side-effect free"
    assert not list((REPO / "web").rglob("*.test.*")), "tests never live in web/ (the frontend loads every .js there)"
