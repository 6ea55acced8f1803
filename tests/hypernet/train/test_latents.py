"""Alpha loss weights, and the latent and text caches."""

import torch

from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.latents import LatentCache, TextCache, alpha_loss_weight


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
    again = LatentCache(examples, encode, "random", 0, torch.device("cpu"))
    assert torch.equal(fresh.latents([0], 1), again.latents([0], 1))


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
