"""List bookkeeping shared by the dataset nodes: batches split, captions/masks/stems aligned."""
import pytest
import torch

from hypernet_studio.hypernet.preprocess.pipeline import align_dataset_inputs, fill_missing_masks


def test_batches_split_and_share_their_entrys_caption_and_stem():
    images = [torch.zeros(2, 4, 5, 3), torch.ones(1, 6, 7, 3)]
    items, captions, masks, stems = align_dataset_inputs(images, ["pair", "single"], None, ["p", "s"])
    assert [tuple(i.shape) for i in items] == [(1, 4, 5, 3), (1, 4, 5, 3), (1, 6, 7, 3)]
    assert captions == ["pair", "pair", "single"] and stems == ["p", "p", "s"] and masks == [None] * 3


def test_single_values_broadcast_defaults_fill_and_mismatches_name_the_input():
    images = [torch.zeros(1, 4, 4, 3)] * 3
    items, captions, masks, stems = align_dataset_inputs(images, ["all"], [torch.ones(1, 4, 4)], None)
    assert captions == ["all"] * 3 and len(masks) == 3 and stems == ["image00000", "image00001", "image00002"]
    with pytest.raises(ValueError, match="input 'stems': has 2 items for 3 images"):
        align_dataset_inputs(images, None, None, ["a", "b"])
    with pytest.raises(ValueError, match="input 'images': is empty"):
        align_dataset_inputs([], None, None, None)


def test_missing_masks_become_opaque_zeros_of_the_image_size():
    filled = fill_missing_masks([torch.zeros(1, 3, 5, 3), torch.zeros(1, 2, 2, 3)], [None, torch.ones(1, 2, 2)])
    assert filled[0].shape == (1, 3, 5) and not filled[0].any() and filled[1].all()


def test_auto_crop_hands_a1111_compat_to_the_face_detector(monkeypatch):
    from hypernet_studio.hypernet.preprocess import pipeline

    made = []

    class RecordingDetector:
        warnings: list = []

        def __init__(self, method, path, a1111_compat=False):
            made.append((method, a1111_compat))

        def detect(self, rgb):
            return []

    monkeypatch.setattr(pipeline, "FaceDetector", RecordingDetector)
    for compat in (False, True):
        pipeline.auto_crop_tensors([torch.rand(1, 32, 48, 3)], [None], [""], ["s"],
                                   {"method": "focal", "width": 32, "height": 32, "a1111_compat": compat,
                                    "face_detector": "haar"})
    assert made == [("haar", False), ("haar", True)]
