"""IMAGE/MASK <-> Pillow conversions."""
import numpy as np
import pytest
import torch

from hypernet_studio.hypernet.images import (
    image_tensor_to_pil,
    mask_tensor_to_pil,
    pil_to_image_tensor,
    pil_to_mask_tensor,
    split_image_batches,
)


def test_image_round_trip_rounds_and_clamps():
    image = torch.tensor([[[[-0.5, 0.2, 1.5], [0.001, 0.998, 0.502]]]])
    pixels = np.asarray(image_tensor_to_pil(image))
    assert pixels.tolist() == [[[0, round(0.2 * 255), 255], [0, 254, 128]]]
    back = pil_to_image_tensor(image_tensor_to_pil(image))
    assert back.shape == (1, 1, 2, 3) and back.dtype == torch.float32
    assert torch.allclose(back, image.clamp(0, 1), atol=0.5 / 255 + 1e-6)


def test_masks_keep_float_values_and_batches_are_refused_per_item():
    mask = torch.tensor([[[0.25, 1.0]]])
    assert torch.equal(pil_to_mask_tensor(mask_tensor_to_pil(mask)), mask)
    with pytest.raises(ValueError, match="batch of 2"):
        image_tensor_to_pil(torch.zeros(2, 4, 4, 3))
    assert [t.shape for t in split_image_batches([torch.zeros(2, 4, 4, 3), torch.zeros(4, 4, 3)])] == \
        [(1, 4, 4, 3)] * 3
