"""Preparing a big folder in chunks (issue 19): Load Images takes one chunk per run, Save Dataset
adds the chunks up to the folder one run over every picture writes, headless with `run
--all-chunks` and node by node; old workflows without the chunk widgets run as before."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hypernet_studio.hypernet.preprocess.chunks import RECORD_NAME
from hypernet_studio.nodes.dataset import LoadImagesNode, SaveDatasetNode
from hypernet_studio.runtime import cli
from hypernet_studio.runtime.headless_host import HEADLESS
from hypernet_studio.runtime.registry import build_registry
from hypernet_studio.runtime.workflow import parse_workflow

REPO_ROOT = Path(__file__).resolve().parents[2]
BIG_WORKFLOW = REPO_ROOT / "workflows" / "dataset_prep_big.json"


def _raw_pictures(folder: Path) -> None:
    """Five files, one broken, one with alpha, one captioned: three chunks of two."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    rgba = (rng.random((80, 80, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[:, :20, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "cut.png")
    Image.fromarray((rng.random((64, 90, 3)) * 255).astype(np.uint8)).save(folder / "left.png")
    Image.fromarray((rng.random((96, 80, 3)) * 255).astype(np.uint8)).save(folder / "tall.jpg")
    Image.fromarray((rng.random((64, 160, 3)) * 255).astype(np.uint8)).save(folder / "wide.png")
    (folder / "wide.txt").write_text("a cat on the left")


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != RECORD_NAME}


@pytest.fixture
def settings_restored():
    saved = {key: getattr(HEADLESS, key) for key in
             ("base_dir", "input_dir", "output_dir", "temp_dir", "models_dir", "device")}
    yield
    for key, value in saved.items():
        setattr(HEADLESS, key, value)


def _run(workflow: Path, base_dir: Path, *options: str) -> None:
    small = ["--base-dir", str(base_dir), "--set", "2.width=64", "--set", "2.height=64", "--set", "2.method=center"]
    assert cli.main(["run", str(workflow), *small, *options]) == cli.EXIT_OK


def test_all_chunks_headless_equal_one_run_over_every_picture(headless_dirs, settings_restored, capsys, tmp_path):
    """Crop, flip, captions and skipped files per chunk add up to one run's folder, byte for byte
    (the tagger bypassed here: the next test runs it per chunk)."""
    _raw_pictures(headless_dirs / "input" / "dataset_raw")
    workflow = json.loads(BIG_WORKFLOW.read_text())
    next(node for node in workflow["nodes"] if node["type"] == "HN_DeepbooruTag")["mode"] = 4  # bypassed
    untagged = tmp_path / "untagged.json"
    untagged.write_text(json.dumps(workflow))
    _run(untagged, headless_dirs, "--set", "1.chunk_size=0", "--set", "5.folder=one_run")
    capsys.readouterr()
    _run(untagged, headless_dirs, "--set", "1.chunk_size=2", "--all-chunks")
    err = capsys.readouterr().err
    assert "chunk 1 of 3 done" in err and "chunk 3 of 3 done" in err and "chunk 4" not in err
    one_run = _files(headless_dirs / "output" / "one_run")
    chunked = headless_dirs / "output" / "dataset_prepared_chunks"
    assert len(one_run) == 10  # 4 pictures (the broken one skipped) x (original + flip) + 2 captions
    assert _files(chunked) == one_run
    assert (chunked / "00007-wide-flip.txt").read_text() == "a cat on the right"
    assert sorted(json.loads((chunked / RECORD_NAME).read_text())["chunks"]) == ["0", "1", "2"]


def test_the_shipped_chunked_workflow_tags_every_chunk(headless_dirs, settings_restored):
    from ..hypernet.taggers.deepbooru_weights import forget_cached_model, random_state_dict

    raw = headless_dirs / "input" / "dataset_raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(raw / name)
    (headless_dirs / "models" / "deepbooru").mkdir()
    torch.save(random_state_dict(num_tags=3, tags=["b_tag", "a_tag", "c_(x)"]),
               headless_dirs / "models" / "deepbooru" / "model-resnet_custom_v3.pt")
    forget_cached_model()
    try:  # one picture a chunk, flipped in place: the tagger runs once per chunk, on one picture
        _run(BIG_WORKFLOW, headless_dirs, "--set", "3.mode=replace", "--set", "1.chunk_size=1", "--all-chunks",
             "--set", "4.input_size=128", "--set", "4.threshold=0.0")
    finally:
        forget_cached_model()
    chunked = _files(headless_dirs / "output" / "dataset_prepared_chunks")
    assert sorted(chunked) == ["00000-a.png", "00000-a.txt", "00001-b.png", "00001-b.txt"]  # as one run names them
    assert chunked["00000-a.txt"] == chunked["00001-b.txt"] == b"a tag, b tag, c \\(x\\)"  # threshold 0: all tags


def _save_chunk(index, value, target="set"):
    """Load chunk `index` of two-picture chunks and save it with its chunk; pictures filled with `value`."""
    loaded = LoadImagesNode().load("raw", False, ".txt", False, 0, 0, "white", 100.0, chunk_size=2, chunk=index)
    images, masks, captions, stems, _, chunk = loaded["result"]
    images = [torch.full_like(image, value) for image in images]
    SaveDatasetNode().save(images, [target], ["index-stem"], [True], captions, masks, stems, [chunk])
    return loaded


def test_rerunning_one_chunk_changes_no_other_file(headless_dirs):
    _raw_pictures(headless_dirs / "input" / "raw")
    shown = [_save_chunk(index, 0.25)["ui"] for index in range(3)]
    assert shown[1]["chunk"] == [1, 3] and shown[1]["text"][0].startswith("chunk 2 of 3: files 3-4 of 5")
    folder = headless_dirs / "output" / "set"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.name != RECORD_NAME}
    _save_chunk(1, 0.75)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.name != RECORD_NAME}
    assert sorted(after) == sorted(before) == ["00000-cut.png", "00001-left.png", "00002-tall.png", "00003-wide.png",
                                               "00003-wide.txt"]
    assert {name for name in after if after[name] != before[name]} == {"00001-left.png", "00002-tall.png"}


def test_a_chunk_past_the_last_is_refused_at_queue_time(headless_dirs):
    _raw_pictures(headless_dirs / "input" / "raw")
    check = dict(folder="raw", background="white", recursive=False, kohya_repeats=False, offset=1, limit=0)
    assert LoadImagesNode.VALIDATE_INPUTS(**check, chunk_size=2, chunk=1) is True
    refused = LoadImagesNode.VALIDATE_INPUTS(**check, chunk_size=2, chunk=2)
    assert "input 'chunk'" in refused and "the 4 selected files make 2 chunk(s) of 2, numbered 0-1" in refused
    assert LoadImagesNode.VALIDATE_INPUTS(**check, chunk_size=0, chunk=9) is True  # chunk unused without chunks


def test_a_workflow_saved_before_chunks_loads_everything_in_one_run(headless_dirs):
    """The shipped dataset_prep.json as saved before chunk_size and chunk existed."""
    saved = json.loads((REPO_ROOT / "workflows" / "dataset_prep.json").read_text())
    load = next(node for node in saved["nodes"] if node["type"] == "HN_LoadImages")
    load["widgets_values"] = load["widgets_values"][:9]  # up to max_side
    registry = build_registry(include_standins=True)[0]
    prompt, _ = parse_workflow(saved, registry)
    inputs = prompt[str(load["id"])]["inputs"]
    assert "chunk_size" not in inputs and "chunk" not in inputs
    _raw_pictures(headless_dirs / "input" / "dataset_raw")
    images, *_, count, chunk = registry["HN_LoadImages"]().load(**inputs)["result"]
    assert count == len(images) == 4 and chunk is None


def test_a_chunk_that_brings_no_pictures_still_counts_as_saved(headless_dirs):
    """A filter before Save Dataset may drop a whole chunk: the next chunk must still be saved."""
    _raw_pictures(headless_dirs / "input" / "raw")
    _save_chunk(0, 0.25)
    chunk = LoadImagesNode().load("raw", False, ".txt", False, 0, 0, "white", 100.0, chunk_size=2, chunk=1)
    shown = SaveDatasetNode().save([], ["set"], ["index-stem"], [True], chunk=[chunk["result"][5]])
    assert "nothing to write" in shown["ui"]["text"][0]
    _save_chunk(2, 0.25)
    assert sorted(p.name for p in (headless_dirs / "output" / "set").glob("*.png")) == [
        "00000-cut.png", "00001-wide.png"]
