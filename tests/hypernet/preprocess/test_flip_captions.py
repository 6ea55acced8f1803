"""Flip and caption bookkeeping."""
import pytest
import torch

from hypernet_studio.hypernet.preprocess.captions import combine_caption
from hypernet_studio.hypernet.preprocess.flip import flip_dataset, flip_tensor, swap_left_right


def _image(h=2, w=3):
    return torch.arange(h * w * 3, dtype=torch.float32).reshape(1, h, w, 3) / (h * w * 3)


def test_flip_directions_match_reference_indexing():
    image = _image()
    assert torch.equal(flip_tensor(image, "horizontal"), image[:, :, [2, 1, 0], :])
    assert torch.equal(flip_tensor(image, "vertical"), image[:, [1, 0], :, :])
    assert torch.equal(flip_tensor(image, "both"), image[:, [1, 0]][:, :, [2, 1, 0]])
    mask = torch.tensor([[[0.0, 1.0, 0.5]]])
    assert flip_tensor(mask, "horizontal").tolist() == [[[0.5, 1.0, 0.0]]]


def test_append_interleaves_copies_and_captions_follow():
    images, masks = [_image(), _image(4, 5)], [None, torch.zeros(1, 4, 5)]
    original = images[0].clone()
    out = flip_dataset(images, masks, ["a cat on the left", "Right hand"], ["a", "b"], "horizontal", "append",
                       swap_words=True)
    assert out.captions == ["a cat on the left", "a cat on the right", "Right hand", "Left hand"]
    assert out.stems == ["a", "a-flip", "b", "b-flip"]
    assert out.masks[1] is None and out.masks[3].shape == (1, 4, 5)
    assert torch.equal(out.images[1], images[0].flip(2)) and torch.equal(images[0], original)


def test_replace_and_vertical_keep_words():
    out = flip_dataset([_image()], [None], ["left eye"], ["a"], "vertical", "replace", swap_words=True)
    assert out.captions == ["left eye"] and out.stems == ["a"] and len(out.images) == 1
    assert swap_left_right("LEFT leftover Left-right") == "RIGHT leftover Right-left"
    with pytest.raises(ValueError, match="flip mode"):
        flip_dataset([_image()], [None], [""], ["a"], "horizontal", "sideways")


@pytest.mark.parametrize("action,expected", [
    ("ignore", "tags"), ("copy", "old"), ("prepend", "old, tags"), ("append", "tags, old")])
def test_caption_actions(action, expected):
    assert combine_caption(" old ", "tags", action, ", ") == expected
    assert combine_caption("", "tags", action) == "tags"


def test_a1111_space_separator_and_bad_action():
    assert combine_caption("old", "tags", "prepend", " ") == "old tags"
    with pytest.raises(ValueError, match="caption action"):
        combine_caption("a", "b", "merge")
