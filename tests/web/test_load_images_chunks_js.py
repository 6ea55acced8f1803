"""Load Images' chunk control in the editor: the rules under node:test, the glue wired to our names."""
from pathlib import Path

from .test_web_js import _node_tests

REPO = Path(__file__).resolve().parents[2]


def test_chunk_rules_pass_node_tests():
    assert "# pass 2" in _node_tests("chunk_rules.test.mjs")


def test_glue_names_load_images_and_its_chunk_widgets():
    from hypernet_studio.nodes.dataset import LoadImagesNode

    glue = (REPO / "web" / "load_images_chunks.js").read_text()
    optional = LoadImagesNode.INPUT_TYPES()["optional"]
    assert '"HN_LoadImages"' in glue and LoadImagesNode.NODE_ID == "HN_LoadImages"
    assert '"chunk"' in glue and '"chunk_size"' in glue and optional["chunk"][1]["control_after_generate"] is True
    assert 'from "./load_images_chunk_rules.js"' in glue and "widget.serialize = false" in glue
