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


def test_auto_crop_converts_one_source_picture_at_a_time_with_the_same_result(monkeypatch):
    import weakref

    from hypernet_studio.hypernet.images import image_tensor_to_pil, mask_tensor_to_pil, pil_to_image_tensor
    from hypernet_studio.hypernet.preprocess import pipeline
    from hypernet_studio.hypernet.preprocess.crop import crop_dataset

    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 48, 96, 3, generator=generator) for _ in range(6)]
    masks = [torch.rand(1, 48, 96, generator=generator) if i % 2 else None for i in range(6)]
    options = {"method": "split", "width": 32, "height": 32, "split_threshold": 1.0}
    expected = crop_dataset([image_tensor_to_pil(i) for i in images],
                            [None if m is None else mask_tensor_to_pil(m) for m in masks], [""] * 6,
                            [f"s{i}" for i in range(6)], pipeline.crop_settings_from(options))
    most = {"image": 0, "mask": 0}

    def tracked(kind, convert):
        alive = set()

        def converted(tensor):
            picture = convert(tensor)
            alive.add(id(picture))
            most[kind] = max(most[kind], len(alive))
            weakref.finalize(picture, alive.discard, id(picture))
            return picture
        return converted

    monkeypatch.setenv("HYPERNET_STUDIO_WORKERS", "2")  # one picture per worker: two at most
    monkeypatch.setattr(pipeline, "image_tensor_to_pil", tracked("image", image_tensor_to_pil))
    monkeypatch.setattr(pipeline, "mask_tensor_to_pil", tracked("mask", mask_tensor_to_pil))
    out = pipeline.auto_crop_tensors(images, masks, [""] * 6, [f"s{i}" for i in range(6)], options)
    assert len(out.images) == len(expected.images) > 6, "split tiles every picture"
    assert all(torch.equal(a, pil_to_image_tensor(b)) for a, b in zip(out.images, expected.images))
    assert out.stems == expected.stems and [m is None for m in out.masks] == [m is None for m in expected.masks]
    assert most["image"] <= 2 and most["mask"] <= 2, most
