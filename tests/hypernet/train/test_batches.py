"""Buckets, image preparation and A1111's grouped batch order."""
from collections import Counter

import pytest
import torch

from hypernet_studio.hypernet.train.batches import BatchPlan, bucket_size, prepare_examples


@pytest.mark.parametrize("width,height,expected", [(512, 512, (512, 512)), (1024, 512, (704, 384)),
                                                   (300, 900, (320, 832)), (64, 4000, (64, 4096))])
def test_bucket_keeps_aspect_and_area(width, height, expected):
    got = bucket_size(width, height, 512)
    assert got == expected
    assert got[0] % 64 == 0 and got[1] % 64 == 0


def test_prepare_examples_buckets_or_stretches():
    images = [torch.rand(1, 100, 200, 3), torch.rand(1, 64, 64, 3)]
    bucketed = prepare_examples(images, ["a", "b"], resolution=64, multiple=16)
    assert [e.size for e in bucketed] == [(96, 48), (64, 64)]
    stretched = prepare_examples(images, ["a", "b"], resolution=64, aspect_buckets=False)
    assert all(e.size == (64, 64) for e in stretched)
    with pytest.raises(ValueError, match="input 'resolution': must be a multiple of 64"):
        prepare_examples(images, ["a", "b"], resolution=100)


def test_batch_plan_follows_a1111_grouping():
    sizes = [(64, 64)] * 5 + [(96, 48)] * 3
    plan = BatchPlan(sizes, batch_size=2, accumulation=3, seed=1)
    assert plan.batch_size == 2 and plan.accumulation == 3
    assert plan.batches_per_epoch == 3 and plan.steps_per_epoch == 1  # 8//2 = 4 batches, 4 - 4 % 3
    for epoch in range(5):
        for batch in plan.epoch_batches(epoch):
            assert len(batch) == 2 and len({sizes[i] for i in batch}) == 1
    again = BatchPlan(sizes, batch_size=2, accumulation=3, seed=1)
    assert [again.batch(m) for m in range(9)] == [plan.batch(m) for m in range(9)]
    small = BatchPlan([(64, 64)] * 3, batch_size=8, accumulation=4, seed=0)
    assert small.batch_size == 3 and small.accumulation == 1


def test_full_groups_cover_every_image_once_per_epoch():
    sizes = [(64, 64)] * 4 + [(96, 48)] * 4
    plan = BatchPlan(sizes, batch_size=2, accumulation=1, seed=5)
    for epoch in range(3):
        assert Counter(i for b in plan.epoch_batches(epoch) for i in b) == Counter(range(8))
