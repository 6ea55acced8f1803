"""Save Dataset naming and file contents."""
import pytest
import torch
from PIL import Image

from hypernet_studio.hypernet.preprocess.saving import dataset_names, safe_stem, save_dataset


def test_names_are_stable_safe_and_unique():
    stems = ["cat", "sub/dir/cat", "cat", "we?ird name"]
    assert dataset_names(4, stems, "index-stem") == ["00000-cat", "00001-sub_dir_cat", "00002-cat",
                                                      "00003-we_ird_name"]
    assert dataset_names(4, stems, "stem") == ["cat", "sub_dir_cat", "cat-1", "we_ird_name"]
    assert dataset_names(2, None, "index") == ["00000", "00001"]
    assert safe_stem("../..") == "image"
    with pytest.raises(ValueError, match="naming"):
        dataset_names(1, None, "random")


def test_pixels_round_trip_and_empty_captions_remove_stale_files(tmp_path):
    image = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    (tmp_path / "00000.txt").write_text("stale")
    saved = save_dataset(tmp_path, [image], captions=[""], naming="index")
    assert saved.images == [tmp_path / "00000.png"] and saved.captions == []
    assert not (tmp_path / "00000.txt").exists()
    assert Image.open(tmp_path / "00000.png").getpixel((0, 0)) == (0, 128, 255)
    half = torch.full((1, 1, 1), 0.25)  # 25% transparent -> alpha 191
    save_dataset(tmp_path, [image], captions=["c"], masks=[half], naming="index")
    assert Image.open(tmp_path / "00000.png").getpixel((0, 0)) == (0, 128, 255, 191)
    assert (tmp_path / "00000.txt").read_text() == "c"


def test_files_of_an_earlier_larger_run_are_reported_not_deleted(tmp_path):
    image = torch.zeros(1, 2, 2, 3)
    save_dataset(tmp_path, [image] * 3, captions=["a", "b", "c"], naming="index")
    (tmp_path / "notes.md").write_text("not a dataset file")
    saved = save_dataset(tmp_path, [image], captions=["a"], naming="index")
    assert saved.leftovers == [tmp_path / n for n in ("00001.png", "00001.txt", "00002.png", "00002.txt")]
    assert (tmp_path / "00002.png").exists()
    assert save_dataset(tmp_path / "fresh", [image], naming="index").leftovers == []
