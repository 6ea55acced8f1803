"""Dataset nodes: contract, list bookkeeping, errors that name node and input, and the shipped
workflows/dataset_prep.json run headless with a random-weight Deepbooru file."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hypernet_studio.nodes import dataset as dataset_nodes
from hypernet_studio.nodes.dataset import (
    AutoCropNode,
    DeepbooruTagNode,
    FlipImagesNode,
    LoadImagesNode,
    SaveDatasetNode,
    WD14TagNode,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_IDS = ["HN_LoadImages", "HN_AutoCrop", "HN_Flip", "HN_DeepbooruTag", "HN_WD14Tag", "HN_SaveDataset"]


def _defaults(cls):
    """Every widget at its default, wrapped in one-item lists as INPUT_IS_LIST nodes receive them."""
    spec = cls.INPUT_TYPES()
    values = {}
    for section in ("required", "optional"):
        for name, (_, options) in spec.get(section, {}).items():
            if "default" in options and not options.get("forceInput"):
                values[name] = [options["default"]]
    return values


def _image(h, w, value=0.5):
    return torch.full((1, h, w, 3), value)


def test_contract_of_every_dataset_node():
    assert sorted(dataset_nodes.NODE_CLASS_MAPPINGS) == sorted(NODE_IDS)
    for node_id, cls in dataset_nodes.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for name, (kind, options) in section.items():
                assert options.get("tooltip"), (node_id, name)
                if "min" in options:
                    assert options["min"] <= options["default"] <= options["max"], (node_id, name)
                if isinstance(kind, list):
                    assert options["default"] in kind, (node_id, name)
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
        assert all(n == n.lower() for n in cls.RETURN_NAMES)
        assert cls.CATEGORY == "hypernetwork/dataset" and cls.DESCRIPTION
        assert node_id in dataset_nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert SaveDatasetNode.OUTPUT_NODE is True


def test_load_images_resolves_relative_folders_and_repeats(headless_dirs):
    folder = headless_dirs / "input" / "set" / "2_style"
    folder.mkdir(parents=True)
    rgba = np.zeros((6, 4, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:3, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "a.png")
    (folder / "a.txt").write_text("cap")
    (folder / "b.png").write_bytes(b"")
    out = LoadImagesNode().load("set", True, ".txt", True, 0, 0, "black", 100.0)
    images, masks, captions, stems, count, chunk = out["result"]
    assert chunk is None  # loaded whole, not in chunks
    assert count == 2 and stems == ["2_style/a"] * 2 and captions == ["cap", "cap"]
    assert images[0].shape == (1, 6, 4, 3) and masks[0].shape == (1, 6, 4)
    assert masks[0][0, 0, 0] == 1.0 and masks[0][0, 5, 0] == 0.0  # 1 = transparent
    assert any("b.png" in line and "0 bytes" in line for line in out["ui"]["text"])
    with pytest.raises(ValueError, match="HN_LoadImages, input 'folder': no images loaded from folder .*nothing"):
        (headless_dirs / "input" / "nothing").mkdir()
        LoadImagesNode().load("nothing", False, ".txt", False, 0, 0, "white", 100.0)
    first = LoadImagesNode.IS_CHANGED("set", recursive=True)
    (folder / "c.png").write_bytes(b"x")
    assert LoadImagesNode.IS_CHANGED("set", recursive=True) != first


def test_crop_flip_keep_lists_parallel_and_inputs_untouched():
    images = [_image(64, 192), torch.cat([_image(96, 96, 0.2), _image(96, 96, 0.8)])]  # a batch is split
    originals = [i.clone() for i in images]
    widgets = {**_defaults(AutoCropNode), "method": ["split"], "width": [64], "height": [64]}
    out = AutoCropNode().crop(images, ["wide left", "sq"], None, ["w", "s"], **widgets)
    crops, masks, captions, stems, debug, boxes = out["result"]
    assert [c.shape for c in crops] == [(1, 64, 64, 3)] * len(crops)
    assert captions[:-2] == ["wide left"] * (len(crops) - 2) and captions[-2:] == ["sq", "sq"]
    assert stems[-2:] == ["s", "s"] and len(json.loads(boxes)) == len(crops) == len(masks)
    assert all(torch.equal(a, b) for a, b in zip(images, originals))
    flipped = FlipImagesNode().flip(crops, ["horizontal"], ["append"], [True], captions, masks, stems)
    assert len(flipped[0]) == 2 * len(crops) and flipped[2][1] == "wide right" and flipped[3][1] == stems[0] + "-flip"


def test_errors_name_the_node_and_the_input(headless_dirs, as_node_7):
    widgets = _defaults(AutoCropNode)
    with pytest.raises(ValueError, match=r"^node 7 \(HN_AutoCrop\), input 'captions': has 2 items for 3 images"):
        AutoCropNode().crop([_image(8, 8)] * 3, ["a", "b"], None, None, **widgets)
    with pytest.raises(ValueError, match=r"node 7 \(HN_SaveDataset\), input 'folder':.*'\.\.'"):
        SaveDatasetNode().save([_image(8, 8)], ["../escape"], ["index-stem"], [True])
    with pytest.raises(ValueError, match=r"\(HN_SaveDataset\), input 'folder':.*absolute"):
        SaveDatasetNode().save([_image(8, 8)], ["/tmp/x"], ["index-stem"], [True])
    with pytest.raises(ValueError) as info:
        DeepbooruTagNode().tag([_image(8, 8)], **_defaults(DeepbooruTagNode))
    message = str(info.value)
    assert "(HN_DeepbooruTag), input 'model'" in message and "model-resnet_custom_v3.pt" in message
    assert str(headless_dirs / "models" / "deepbooru") in message and "TorchDeepDanbooru" in message
    with pytest.raises(ValueError, match=r"\(HN_AutoCrop\), input 'face_detector': is 'yunet'.*facedetect"):
        AutoCropNode().crop([_image(8, 8)], **{**widgets, "face_detector": ["yunet"]})
    for face_model in ("missing.onnx", str(headless_dirs / "elsewhere" / "y.onnx")):
        with pytest.raises(ValueError, match=r"\(HN_AutoCrop\), input 'face_model': .*(missing|y).onnx"):
            AutoCropNode().crop([_image(8, 8)], **{**widgets, "face_model": [face_model]})
    (headless_dirs / "models" / "deepbooru").mkdir(exist_ok=True)
    (headless_dirs / "models" / "deepbooru" / "model-resnet_custom_v3.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"\(HN_DeepbooruTag\), input 'model': .*resnet_custom_v3.pt: .*not a torch"):
        DeepbooruTagNode().tag([_image(8, 8)], **_defaults(DeepbooruTagNode))
    with pytest.raises(ValueError, match=r"\(HN_LoadImages\), input 'background'"):
        LoadImagesNode().load("x", False, ".txt", False, 0, 0, "not-a-colour", 100.0)
    with pytest.raises(ValueError, match=r"\(HN_WD14Tag\), input 'model':.*wd14_tagger"):
        WD14TagNode().tag([_image(8, 8)], **_defaults(WD14TagNode))
    all_skipped = {**widgets, "method": ["auto_sized"], "auto_error_threshold": [0.0]}
    with pytest.raises(ValueError, match=r"\(HN_AutoCrop\), input 'images': no image could be cropped: .*37x100"):
        AutoCropNode().crop([_image(100, 37)], **all_skipped)


def test_save_dataset_writes_stable_names_alpha_and_captions(headless_dirs):
    mask = torch.zeros(1, 4, 4)
    mask[0, 0, 0] = 1.0
    node = SaveDatasetNode()
    args = ([_image(4, 4), _image(4, 4)], ["out/set"], ["index-stem"], [True], ["one", ""], [mask, None],
            ["a/b", "a/b"])
    result = node.save(*args)
    folder = headless_dirs / "output" / "out" / "set"
    assert result["result"] == (str(folder), 2)
    assert sorted(p.name for p in folder.iterdir()) == ["00000-a_b.png", "00000-a_b.txt", "00001-a_b.png"]
    assert (folder / "00000-a_b.txt").read_text() == "one"
    saved = Image.open(folder / "00000-a_b.png")
    assert saved.mode == "RGBA" and saved.getpixel((0, 0))[3] == 0 and saved.getpixel((1, 1))[3] == 255
    assert Image.open(folder / "00001-a_b.png").mode == "RGB"
    again = node.save(*args)  # a re-run rewrites the same names, no leftovers
    assert len(list(folder.iterdir())) == 3 and not list(folder.glob(".*")) and len(again["ui"]["text"]) == 1
    smaller = node.save([_image(4, 4)], ["out/set"], ["index-stem"], [True], ["one"], None, ["a/b"])
    assert "1 other .png/.txt file(s)" in smaller["ui"]["text"][1] and "00001-a_b.png" in smaller["ui"]["text"][1]


def test_shipped_dataset_workflow_runs_headless(headless_dirs):
    from hypernet_studio.runtime.api import run_workflow_file

    from ..hypernet.taggers.deepbooru_weights import forget_cached_model, random_state_dict

    raw = headless_dirs / "input" / "dataset_raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 160, 3)) * 255).astype(np.uint8)).save(raw / "wide.png")
    Image.fromarray((rng.random((96, 80, 3)) * 255).astype(np.uint8)).save(raw / "tall.jpg")
    rgba = (rng.random((80, 80, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[:, :20, 3] = 0
    Image.fromarray(rgba, "RGBA").save(raw / "cut.png")
    (raw / "wide.txt").write_text("a cat on the left")
    (raw / "broken.png").write_bytes(b"\x89PNG broken")
    model_dir = headless_dirs / "models" / "deepbooru"
    model_dir.mkdir()
    tags = ["b_tag", "a_tag", "rating:safe", "c_(x)"]
    torch.save(random_state_dict(num_tags=4, tags=tags), model_dir / "model-resnet_custom_v3.pt")
    forget_cached_model()
    overrides = {"2.width": 64, "2.height": 64, "4.input_size": 128, "4.threshold": 0.0}
    result = run_workflow_file(REPO_ROOT / "workflows" / "dataset_prep.json", overrides=overrides)
    forget_cached_model()
    out = headless_dirs / "output" / "dataset_prepared"
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["00000-cut.png", "00001-cut-flip.png", "00002-tall.png",
                                      "00003-tall-flip.png", "00004-wide.png", "00005-wide-flip.png"]
    assert all(Image.open(p).size == (64, 64) for p in pngs)
    assert Image.open(pngs[0]).mode == "RGBA"  # the alpha survived crop and flip as a mask
    all_tags = "a tag, b tag, c \\(x\\)"  # threshold 0: every tag but the rating, sorted, spaced, escaped
    assert (out / "00002-tall.txt").read_text() == all_tags
    assert (out / "00004-wide.txt").read_text() == "a cat on the left, " + all_tags
    assert (out / "00005-wide-flip.txt").read_text() == "a cat on the right, " + all_tags
    assert "5" in result.ui and "wrote 6 images" in result.ui["5"]["text"][0]


def test_load_images_cache_key_sees_kohya_subfolders_without_recursive(headless_dirs):
    folder = headless_dirs / "input" / "kohya" / "4_style"
    folder.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(folder / "a.png")
    assert LoadImagesNode().load("kohya", False, ".txt", True, 0, 0, "white", 100.0)["result"][4] == 4
    first = LoadImagesNode.IS_CHANGED("kohya", recursive=False, kohya_repeats=True)
    (folder / "a.txt").write_text("edited caption")
    assert LoadImagesNode.IS_CHANGED("kohya", recursive=False, kohya_repeats=True) != first
    assert LoadImagesNode.IS_CHANGED("no-such-folder") != LoadImagesNode.IS_CHANGED("no-such-folder")  # NaN


def test_megapixel_limit_cannot_promise_more_than_pillow_opens():
    # Pillow raises DecompressionBombError above 2 x MAX_IMAGE_PIXELS whatever our limit says.
    limit = LoadImagesNode.INPUT_TYPES()["required"]["max_megapixels"][1]["max"]
    assert limit * 1_000_000 <= 2 * Image.MAX_IMAGE_PIXELS


def test_pictures_only_in_subfolders_are_refused_at_validation_while_recursive_is_off(headless_dirs):
    """Issue 17: this was an empty load after the model had loaded; now the queue refuses it."""
    nested = headless_dirs / "input" / "nested"
    for sub in ("a", "b"):
        (nested / sub).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(nested / sub / "x.png")
    verdict = LoadImagesNode.VALIDATE_INPUTS("nested", "white", recursive=False, kohya_repeats=False)
    assert verdict == (f"input 'recursive': {nested} has no pictures at its top level; found 2 pictures in "
                       "subfolders; turn on recursive")
    assert LoadImagesNode.VALIDATE_INPUTS("nested", "white", recursive=True, kohya_repeats=False) is True
    Image.new("RGB", (8, 8)).save(nested / "top.png")
    assert LoadImagesNode.VALIDATE_INPUTS("nested", "white", recursive=False, kohya_repeats=False) is True
