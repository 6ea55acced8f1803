"""The caption nodes' text box: wired to ComfyUI's entry point and to node ids the pack declares."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hypernet_studio.nodes import NODE_CLASS_MAPPINGS
from hypernet_studio.nodes.tags import EditTagsNode, FilterByTagsNode, TagStatsNode

SCRIPT = Path(__file__).resolve().parents[2] / "web" / "tag_text.js"


def test_the_text_box_serves_the_three_caption_nodes_and_is_not_saved():
    source = SCRIPT.read_text()
    assert 'from "../../scripts/app.js"' in source and "onExecuted" in source and "serialize: false" in source
    declared = set(re.findall(r'"(HN_\w+)"', re.search(r"TAG_NODES = \[(.*?)\]", source).group(1)))
    assert declared == {TagStatsNode.NODE_ID, EditTagsNode.NODE_ID, FilterByTagsNode.NODE_ID}
    assert declared <= set(NODE_CLASS_MAPPINGS)


def test_the_script_parses():
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    result = subprocess.run([node, "--check", "--input-type=module"], input=SCRIPT.read_text(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
