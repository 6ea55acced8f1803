"""A big folder in chunks: which files a chunk takes, and how saved chunks add up to one folder."""
import json

import pytest
import torch

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.preprocess.chunks import RECORD_NAME, Chunk, chunk_count, select_chunk
from hypernet_studio.hypernet.preprocess.saving import save_dataset


def test_chunks_cut_the_selection_in_order_and_the_last_one_is_short():
    files = [f"f{i}" for i in range(7)]
    cut = [select_chunk(files, 3, index) for index in range(3)]
    assert [items for items, _ in cut] == [["f0", "f1", "f2"], ["f3", "f4", "f5"], ["f6"]]
    assert cut[2][1] == Chunk(index=2, count=3, size=3, files=7)
    assert cut[1][1].describe() == "chunk 2 of 3: files 4-6 of 7; 1 left: queue again for the next"
    assert cut[2][1].describe().endswith("the last one")
    assert select_chunk(files, 0, 5) == (files, None)  # chunk_size 0: everything, as before chunks
    assert [chunk_count(n, 3) for n in (0, 1, 3, 4)] == [1, 1, 1, 2]


def test_a_chunk_past_the_last_is_refused_with_the_count():
    with pytest.raises(InputError, match=r"'chunk'.*is 3, past the last chunk: the 7 selected files make 3 chunk"):
        select_chunk(list(range(7)), 3, 3)


def _pictures(count, start=0):
    """Distinct 4x4 pictures with captions and stems, as a prep chain hands them to Save Dataset."""
    images = [torch.full((1, 4, 4, 3), (start + i + 1) / 100) for i in range(count)]
    return images, [f"caption {start + i}" for i in range(count)], [f"p{start + i}" for i in range(count)]


def _folder_state(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != RECORD_NAME}


@pytest.mark.parametrize("naming", ["index-stem", "index", "stem"])
def test_chunks_saved_in_order_equal_one_save_of_every_picture(tmp_path, naming):
    images, captions, stems = _pictures(7)
    save_dataset(tmp_path / "whole", images, captions, stems, naming=naming)
    for index in range(3):
        part = slice(3 * index, 3 * index + 3)
        chunk = Chunk(index=index, count=3, size=3, files=7)
        save_dataset(tmp_path / "chunks", images[part], captions[part], stems[part], naming=naming, chunk=chunk)
    whole = _folder_state(tmp_path / "whole")
    assert len(whole) == 14 and _folder_state(tmp_path / "chunks") == whole


def test_numbered_chunks_must_follow_their_predecessors_and_nothing_is_written_before(tmp_path):
    images, captions, stems = _pictures(3, start=3)
    with pytest.raises(InputError, match="chunk 0 is not saved .* yet"):
        save_dataset(tmp_path, images, captions, stems, chunk=Chunk(index=1, count=3, size=3, files=7))
    assert list(tmp_path.iterdir()) == []
    # named by stem, the order does not matter
    save_dataset(tmp_path, images, captions, stems, naming="stem", chunk=Chunk(index=1, count=3, size=3, files=7))
    assert (tmp_path / "p3.png").is_file()


def test_rerunning_one_chunk_rewrites_its_files_only(tmp_path):
    chunks = [_pictures(3, start=3 * index) for index in range(3)]
    for index, (images, captions, stems) in enumerate(chunks):
        save_dataset(tmp_path, images, captions, stems, chunk=Chunk(index=index, count=3, size=3, files=9))
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    images, captions, stems = chunks[1]
    again = save_dataset(tmp_path, images, ["new caption"] * 3, stems, chunk=Chunk(index=1, count=3, size=3, files=9))
    assert [p.name for p in again.images] == ["00003-p3.png", "00004-p4.png", "00005-p5.png"] and not again.leftovers
    changed = {p.name for p in tmp_path.iterdir() if p.stat().st_mtime_ns != before[p.name]}
    assert changed - {RECORD_NAME} <= {f"0000{i}-p{i}.{ext}" for i in (3, 4, 5) for ext in ("png", "txt")}
    assert (tmp_path / "00004-p4.txt").read_text() == "new caption"
    assert (tmp_path / "00001-p1.txt").read_text() == "caption 1"
    # fewer pictures now would shift the numbers of chunk 2, which is saved: refused, nothing written
    with pytest.raises(InputError, match="chunk 1 now makes 2 pictures where it made 3"):
        save_dataset(tmp_path, images[:2], captions[:2], stems[:2], chunk=Chunk(index=1, count=3, size=3, files=9))
    assert (tmp_path / "00004-p4.txt").read_text() == "new caption"


def test_a_chunk_never_overwrites_another_chunks_file(tmp_path):
    images, captions, _ = _pictures(2)
    save_dataset(tmp_path, images, captions, ["a b", "c"], naming="stem", chunk=Chunk(0, 2, 2, 4))
    before = _folder_state(tmp_path)
    with pytest.raises(InputError, match="a_b.png was written by chunk 0"):  # "a_b" and "a b" are both a_b
        save_dataset(tmp_path, images, ["other", "x"], ["d", "a_b"], naming="stem", chunk=Chunk(1, 2, 2, 4))
    assert _folder_state(tmp_path) == before


def test_a_folder_cut_differently_is_refused(tmp_path):
    images, captions, stems = _pictures(2)
    save_dataset(tmp_path, images, captions, stems, chunk=Chunk(0, 2, 2, 4))
    assert json.loads((tmp_path / RECORD_NAME).read_text())["chunks"] == {"0": ["00000-p0", "00001-p1"]}
    with pytest.raises(InputError, match="cuts 4 files into chunks of 3, but .* holds chunks of 2 from 4"):
        save_dataset(tmp_path, images, captions, stems, chunk=Chunk(0, 2, 3, 4))
    (tmp_path / RECORD_NAME).write_text("{not json")
    with pytest.raises(InputError, match="'folder'.*not a chunk record"):
        save_dataset(tmp_path, images, captions, stems, chunk=Chunk(0, 2, 2, 4))
