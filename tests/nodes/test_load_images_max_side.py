"""Load Images' optional max_side: declared after the old widgets with the library's default,
applied when the node runs (images and masks alike), refused at validation when unusable."""
import inspect

import numpy as np
import pytest
from PIL import Image

from hypernet_studio.hypernet.preprocess.image_folder import MAX_SIDE_DEFAULT
from hypernet_studio.nodes.dataset import LOAD_IMAGES_INPUTS, LoadImagesNode

OLD_WIDGETS = ["folder", "recursive", "caption_extension", "kohya_repeats", "offset", "limit", "background",
               "max_megapixels"]


def test_max_side_is_optional_after_the_old_widgets_with_one_default_everywhere():
    declared = LoadImagesNode.INPUT_TYPES()
    assert list(declared["required"]) == OLD_WIDGETS == list(LOAD_IMAGES_INPUTS)
    kind, options = declared["optional"]["max_side"]
    assert kind == "INT" and options["default"] == MAX_SIDE_DEFAULT and options["min"] == 0
    # ComfyUI passes nothing for an optional input a workflow lacks: the function default applies.
    assert inspect.signature(LoadImagesNode.load).parameters["max_side"].default == MAX_SIDE_DEFAULT
    assert 1024 <= MAX_SIDE_DEFAULT <= 2048


def _folder_with_a_big_cutout(headless_dirs):
    folder = headless_dirs / "input" / "big"
    folder.mkdir(parents=True)
    rgba = np.full((1200, 1800, 4), 200, np.uint8)
    rgba[..., 3] = 255
    rgba[:, :900, 3] = 0  # left half transparent
    Image.fromarray(rgba, "RGBA").save(folder / "cutout.png")
    Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(folder / "small.png")
    return folder


def test_the_node_scales_big_pictures_and_their_masks_by_default_and_keeps_small_ones(headless_dirs):
    _folder_with_a_big_cutout(headless_dirs)
    loaded = LoadImagesNode().load("big", False, ".txt", False, 0, 0, "white", 100.0)["result"]
    images, masks, _, stems, count, _ = loaded
    assert count == 2 and stems == ["cutout", "small"]
    scale = MAX_SIDE_DEFAULT / 1800
    assert images[0].shape == (1, round(1200 * scale), MAX_SIDE_DEFAULT, 3)
    assert masks[0].shape == images[0].shape[:3]
    assert masks[0][0, :, :round(850 * scale)].min() == 1.0 and masks[0][0, :, round(950 * scale):].max() == 0.0
    assert images[1].shape == (1, 300, 200, 3) and masks[1].shape == (1, 300, 200)
    full = LoadImagesNode().load("big", False, ".txt", False, 0, 0, "white", 100.0, max_side=0)["result"]
    assert full[0][0].shape == (1, 1200, 1800, 3) and full[1][0].shape == (1, 1200, 1800)
    assert full[0][1].shape == (1, 300, 200, 3) and np.array_equal(full[0][1].numpy(), images[1].numpy())
    small = LoadImagesNode().load("big", False, ".txt", False, 0, 0, "white", 100.0, max_side=256)["result"]
    assert small[0][0].shape == (1, 171, 256, 3) and small[0][1].shape == (1, 256, 171, 3)


@pytest.mark.parametrize("value", [-1, 1, 63, 16385])
def test_validation_refuses_a_bad_max_side_naming_the_input(headless_dirs, value):
    (headless_dirs / "input" / "dataset").mkdir()
    verdict = LoadImagesNode.VALIDATE_INPUTS(folder="dataset", background="white", max_side=value)
    assert isinstance(verdict, str) and verdict.startswith("input 'max_side': ")


@pytest.mark.parametrize("value", [None, 0, 64, MAX_SIDE_DEFAULT])
def test_validation_accepts_zero_a_usable_size_or_no_value(headless_dirs, value):
    (headless_dirs / "input" / "dataset").mkdir()
    assert LoadImagesNode.VALIDATE_INPUTS(folder="dataset", background="white", max_side=value) is True


def test_running_with_a_bad_max_side_names_the_node_and_the_input(headless_dirs, as_node_7):
    _folder_with_a_big_cutout(headless_dirs)
    with pytest.raises(ValueError, match=r"^node 7 \(HN_LoadImages\), input 'max_side': is -5"):
        LoadImagesNode().load("big", False, ".txt", False, 0, 0, "white", 100.0, max_side=-5)
