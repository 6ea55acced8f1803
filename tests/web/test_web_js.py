"""The frontend files: chart logic under node:test, glue wired to the right node ids and event."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_chart_core_passes_node_tests():
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed; the chart logic tests need it")
    result = subprocess.run([node, "--test", str(REPO / "tests" / "web" / "chart_core.test.mjs")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# pass 7" in result.stdout


def test_glue_uses_comfyui_entry_points_and_our_names():
    chart = (REPO / "web" / "train_chart.js").read_text()
    spec = (REPO / "web" / "hypernet_spec.js").read_text()
    core = (REPO / "web" / "hypernet_chart_core.js").read_text()
    assert 'from "../../scripts/app.js"' in chart and 'from "../../scripts/api.js"' in chart
    assert '"hypernet.train_step"' in chart and '"HN_TrainHypernet"' in chart
    assert "serialize: false" in chart and "serialize: false" in spec
    assert '"HN_HypernetSpec"' in spec and "onExecuted" in spec
    assert not re.search(r"^\s*import\b", core, re.M) and "app." not in core, "the core module stays side-effect free"
    assert not list((REPO / "web").rglob("*.test.*")), "tests never live in web/ (the frontend loads every .js there)"
