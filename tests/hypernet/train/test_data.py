"""Buckets, A1111's grouped batch order, alpha loss weights, latent and text caches."""
import random
from collections import Counter

import pytest
import torch

from hypernet_studio.hypernet.train.data import (BatchPlan, LatentCache, TextCache, alpha_loss_weight,
                                                 bucket_size, prepare_examples)


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
    with pytest.raises(ValueError, match="resolution must be a multiple of 64"):
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


def test_alpha_weight_is_a1111_min_shift_then_mean_normalised():
    alpha = torch.zeros(1, 16, 16)
    alpha[:, :, 8:] = 1.0
    alpha[:, :8, :8] = 0.5
    weight = alpha_loss_weight(alpha, (2, 2))
    # Reference: area-average to 2x2 -> [[0.5, 1], [0, 1]]; minus min 0; divided by mean 0.625.
    assert torch.allclose(weight, torch.tensor([[[0.8, 1.6], [0.0, 1.6]]]))
    assert alpha_loss_weight(torch.ones(1, 8, 8), (1, 1)) is None
    assert alpha_loss_weight(None, (1, 1)) is None


def test_latent_modes():
    examples = prepare_examples([torch.rand(1, 64, 64, 3)], ["a"], resolution=64)
    mean, std = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 8, 8)
    encode = lambda pixels: (mean.expand(pixels.shape[0], -1, -1, -1), std.expand(pixels.shape[0], -1, -1, -1))
    once = LatentCache(examples, encode, "once", 0, torch.device("cpu"))
    assert torch.equal(once.latents([0], 1), once.latents([0], 2)) and once.latents([0], 1).std() > 0.5
    deterministic = LatentCache(examples, encode, "deterministic", 0, torch.device("cpu"))
    assert torch.equal(deterministic.latents([0], 3), mean)
    fresh = LatentCache(examples, encode, "random", 0, torch.device("cpu"))
    assert not torch.equal(fresh.latents([0], 1), fresh.latents([0], 2))
    assert torch.equal(fresh.latents([0], 1), LatentCache(examples, encode, "random", 0, torch.device("cpu")).latents([0], 1))


def test_text_cache_encodes_each_prompt_once_and_pads_like_a1111():
    calls = []

    def encode(prompts):
        calls.append(list(prompts))
        return [torch.full((3 if p == "long" else 2, 4), float(len(p))) for p in prompts]

    cache = TextCache(encode, torch.device("cpu"))
    cache.warm(["a", "bb", "a"])
    batch = cache.batch(["a", "long"])
    assert calls == [["a", "bb"], ["long"]]
    assert batch.shape == (2, 3, 4) and torch.equal(batch[0, 2], batch[0, 1])
    cache.batch(["bb", "a"])
    assert len(calls) == 2


def test_text_cache_encodes_without_recording_gradients():
    seen = []

    def encode(prompts):
        seen.append(torch.is_grad_enabled())
        return torch.zeros(len(prompts), 77, 8)

    cache = TextCache(encode, torch.device("cpu"))
    with torch.enable_grad():
        cache.batch(["a, b", "b, a"])
    assert seen == [False]


def test_a_mean_only_vae_says_that_sampling_modes_use_the_mean(caplog):
    examples = prepare_examples([torch.rand(1, 64, 64, 3)], ["a"], resolution=64)
    mean = torch.rand(1, 4, 8, 8)
    with caplog.at_level("WARNING"):
        cache = LatentCache(examples, lambda pixels: (mean, None), "random", 0, torch.device("cpu"))
    assert torch.equal(cache.latents([0], 1), mean) and torch.equal(cache.latents([0], 2), mean)
    assert "only the latent mean" in caplog.text
    caplog.clear()
    LatentCache(examples, lambda pixels: (mean, None), "deterministic", 0, torch.device("cpu"))
    assert caplog.text == ""
