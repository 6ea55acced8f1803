"""Caption nodes: Tag Statistics, Edit Tags and Filter by Tags as ComfyUI calls them (INPUT_IS_LIST,
widgets as one-item lists), their queue-time checks, and workflows/curate_captions.json headless."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from hypernet_studio.nodes.dataset import SaveDatasetNode
from hypernet_studio.nodes.tags import EditTagsNode, FilterByTagsNode, TagStatsNode

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = REPO_ROOT / "workflows" / "curate_captions.json"


def _pictures(count):
    return [torch.full((1, 4, 4, 3), index / 10) for index in range(count)]


def test_tag_statistics_shows_table_and_chart_and_writes_the_csv(headless_dirs):
    captions = ["solo, (smile:1.2), text", "solo, smile", "solo, long  hair"]
    out = TagStatsNode().count(captions, [2], ["stats/tags"])
    table, chart = out["result"]
    assert table.splitlines()[0] == "3 captions, 4 distinct tags; tags per caption: min 2 / mean 2.3 / max 3"
    assert "     3  100.0%  solo" in table and "     2   66.7%  smile" in table and "... and 2 more" in table
    assert "warning: in every caption: solo" in table
    assert chart.shape[0] == 1 and chart.shape[3] == 3
    csv_path = headless_dirs / "output" / "stats" / "tags.csv"
    assert csv_path.read_text() == "tag,count,share\nsolo,3,1.0\nsmile,2,0.6667\nlong hair,1,0.3333\ntext,1,0.3333\n"
    shown = out["ui"]["images"][0]
    assert shown["type"] == "temp" and Image.open(headless_dirs / "temp" / shown["filename"]).size == \
        (chart.shape[2], chart.shape[1])
    assert out["ui"]["text"][0] == table.split("\nwarning")[0]
    no_csv = TagStatsNode().count(captions, [2], [""])
    assert not any("wrote" in line for line in no_csv["ui"]["text"])


def test_tag_statistics_refuses_a_csv_outside_the_output_folder(headless_dirs):
    assert "input 'csv_file'" in TagStatsNode.VALIDATE_INPUTS("../escape.csv")
    assert TagStatsNode.VALIDATE_INPUTS("tags.csv") is True


def test_edit_tags_edits_captions_and_passes_the_other_lists_through():
    images, masks, stems = _pictures(2), [torch.zeros(1, 4, 4)] * 2, ["a", "b"]
    out = EditTagsNode().edit(["1girl, text", "text"], ["remove: text\nreplace: 1girl -> woman"], images, masks, stems)
    got_images, got_masks, captions, got_stems, summary = out["result"]
    assert got_images is images and got_masks is masks and got_stems is stems
    assert captions == ["woman", ""]
    assert summary.splitlines() == ["remove: 2 tags from 2 captions", "replace: 1girl -> woman in 1 captions",
                                    "warning: 1 caption(s) have no tags left after the rules (kept, empty): caption 2"]
    assert out["ui"]["text"] == summary.splitlines()
    alone = EditTagsNode().edit(["b, a"], ["sort: alpha"])["result"]
    assert alone[:4] == ([], [], ["a, b"], [])


def test_edit_tags_refuses_bad_rules_at_queue_time_with_the_line():
    assert EditTagsNode.VALIDATE_INPUTS("remove: a\nfrobnicate: b").startswith(
        "input 'rules': line 2: unknown rule 'frobnicate'")
    assert EditTagsNode.VALIDATE_INPUTS("# fine\ndedupe") is True
    assert EditTagsNode.VALIDATE_INPUTS(None) is True  # a linked rules input is checked when it runs
    with pytest.raises(ValueError, match=r"HN_EditTags.*input 'rules': line 1: sort takes alpha or count"):
        EditTagsNode().edit(["a"], ["sort: random"])


def test_filter_by_tags_splits_every_list_in_step_and_reports_counts():
    images, stems = _pictures(4), ["s0", "s1", "s2", "s3"]
    masks = [torch.full((1, 4, 4), index / 10) for index in range(4)]
    captions = ["solo", "text, solo", "(watermark:1.2)", "smile"]
    out = FilterByTagsNode().split(images, captions, ["NOT (text OR watermark OR signature)"], masks, stems)
    kept_images, kept_masks, kept_captions, kept_stems, *dropped = out["result"]
    assert kept_captions == ["solo", "smile"] and kept_stems == ["s0", "s3"]
    assert [float(i.max()) for i in kept_images] == pytest.approx([0.0, 0.3])
    assert [float(m.max()) for m in kept_masks] == pytest.approx([0.0, 0.3])
    assert dropped[2] == ["text, solo", "(watermark:1.2)"] and dropped[3] == ["s1", "s2"]
    assert [float(i.max()) for i in dropped[0]] == pytest.approx([0.1, 0.2])
    assert [float(m.max()) for m in dropped[1]] == pytest.approx([0.1, 0.2])
    assert out["ui"]["text"] == ["kept 2 of 4 pictures, dropped 2",
                                 "no caption has signature: such a name matches nothing"]


def test_filter_by_tags_fills_missing_masks_and_names_stems():
    out = FilterByTagsNode().split(_pictures(2), ["a", "b"], ["a"])
    _, masks, _, stems, _, dropped_masks, _, dropped_stems = out["result"]
    assert [m.shape for m in masks + dropped_masks] == [torch.Size([1, 4, 4])] * 2
    assert float(masks[0].abs().sum()) == 0.0 and stems == ["image00000"] and dropped_stems == ["image00001"]


def test_filter_by_tags_refuses_a_bad_expression_at_queue_time_with_the_position():
    assert FilterByTagsNode.VALIDATE_INPUTS("NOT (text OR watermark") == \
        "input 'expression': '(' is never closed: it opens at position 5"
    assert FilterByTagsNode.VALIDATE_INPUTS("NOT (text OR watermark)") is True


def test_save_dataset_writes_nothing_for_an_empty_list(headless_dirs):
    out = SaveDatasetNode().save([], ["review"], ["index-stem"], [True], [], [], [])
    assert out["result"] == (str(headless_dirs / "output" / "review"), 0)
    assert out["ui"]["text"][0].startswith("nothing to write to ")
    assert not (headless_dirs / "output" / "review").exists()


def test_train_hypernet_takes_keep_tokens_last_with_default_0():
    from hypernet_studio.nodes.train import TrainHypernetNode

    optional = TrainHypernetNode.INPUT_TYPES()["optional"]
    names = list(optional)  # widgets added later (cache_folder, ...) come after it, never before
    assert names.index("keep_tokens") == names.index("log_to") + 1
    assert optional["keep_tokens"][0] == "INT" and optional["keep_tokens"][1]["default"] == 0


def _run_curate(headless_dirs, overrides=None):
    from hypernet_studio.runtime.api import run_workflow_file
    from hypernet_studio.runtime.examples import write_examples

    write_examples(headless_dirs)
    return run_workflow_file(WORKFLOW, overrides=overrides)


def test_the_curate_captions_workflow_runs_headless_on_the_examples(headless_dirs):
    result = _run_curate(headless_dirs)
    curated = headless_dirs / "output" / "dataset_curated"
    assert sorted(p.name for p in curated.glob("*.txt")) == ["00000-photo0.txt", "00001-photo1.txt",
                                                             "00002-photo2.txt"]
    assert (curated / "00000-photo0.txt").read_text() == "shapes style, red, square"
    assert (curated / "00001-photo1.txt").read_text() == "shapes style, blue, circle"
    assert Image.open(curated / "00000-photo0.png").mode == "RGBA"  # the example's alpha survived as a mask
    assert (headless_dirs / "output" / "tag_stats.csv").read_text().startswith("tag,count,share\n")
    assert not (headless_dirs / "output" / "dataset_dropped").exists()
    texts = {node: ui.get("text", []) for node, ui in result.ui.items()}
    assert texts["2"][0].startswith("3 captions, 3 distinct tags")
    assert texts["4"][0] == "kept 3 of 3 pictures, dropped 0"
    assert texts["6"][0].startswith("nothing to write")
    assert any(path.parent == headless_dirs / "temp" and path.is_file() for path in result.files)


def test_the_curate_captions_workflow_sends_dropped_pictures_to_review(headless_dirs):
    _run_curate(headless_dirs, {"4.expression": "NOT blue"})
    review = headless_dirs / "output" / "dataset_dropped"
    assert sorted(p.name for p in review.iterdir()) == ["00000-photo1.png", "00000-photo1.txt"]
    assert (review / "00000-photo1.txt").read_text() == "shapes style, blue, circle"
    assert len(list((headless_dirs / "output" / "dataset_curated").glob("*.png"))) == 2


def test_bad_rules_and_expressions_are_refused_before_anything_runs(headless_dirs):
    from hypernet_studio.runtime.workflow_checks import PromptValidationError

    with pytest.raises(PromptValidationError) as raised:
        _run_curate(headless_dirs, {"3.rules": "remove: a\nsort: random", "4.expression": "NOT (text OR"})
    text = str(raised.value)
    assert "node 3 (HN_EditTags), input 'rules': line 2: sort takes alpha or count" in text
    assert "node 4 (HN_FilterByTags), input 'expression': expected a tag name, NOT or '(' but the expression " \
           "ends at position 13" in text
    assert not (headless_dirs / "output" / "tag_stats.csv").exists()


def test_the_curate_captions_workflow_is_laid_out_without_overlaps():
    nodes = json.loads(WORKFLOW.read_text())["nodes"]
    title = 30  # the frontend draws a node's title bar above its position
    boxes = [(n["pos"][0], n["pos"][1] - title, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in nodes]
    for index, a in enumerate(boxes):
        for b in boxes[index + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
