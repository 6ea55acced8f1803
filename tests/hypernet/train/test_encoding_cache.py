"""The persistent latent and conditioning cache: reuse across runs (0 VAE calls, both backends),
misses for what changed and only for that, shards that are truncated or corrupt, two writers at
once, and the size limit."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train import encoding_cache
from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig
from hypernet_studio.hypernet.train.encoding_cache import EncodingCache, weights_digest
from hypernet_studio.hypernet.train.latents import LatentCache, TextCache
from hypernet_studio.hypernet.train.session import TrainingData, run_training

from .fake_comfy import FakeCLIP, FakeVAE, comfy_objects
from .fakes import CHANNELS, CONTEXT, tiny_dataset

CPU = torch.device("cpu")
LIMIT = 10**9


class CountingEncoder:
    """A VAE stand-in whose latent is a function of the pixels (mean and std), counting pictures."""

    def __init__(self, offset: float = 0.0):
        self.pictures, self.offset = 0, offset

    def __call__(self, pixels):
        self.pictures += pixels.shape[0]
        pooled = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8)
        mean = torch.cat([pooled, pooled[:, :1]], 1) + self.offset
        return mean, mean.abs() * 0.1 + 0.01


def _examples(count=3, size=64, seed=0, resolution=64):
    images, captions = tiny_dataset(count, size=size, seed=seed)
    return images, prepare_examples(images, captions, resolution=resolution)


def _latents(examples, encoder, cache, mode="deterministic"):
    return LatentCache(examples, encoder, mode, 0, CPU, cache=cache)


def test_a_changed_picture_vae_or_resolution_encodes_just_what_changed(tmp_path):
    images, examples = _examples()
    encoder = CountingEncoder()
    first = _latents(examples, encoder, EncodingCache(tmp_path, LIMIT, "vae-a", "clip"))
    assert encoder.pictures == 3
    again = _latents(_examples()[1], encoder, EncodingCache(tmp_path, LIMIT, "vae-a", "clip"), mode="random")
    assert encoder.pictures == 3, "a hit, for another latent sampling mode too"
    assert all(torch.equal(again.means[i], first.means[i]) for i in range(3))
    assert again.stds[0] is not None and torch.equal(again.stds[0], CountingEncoder()(examples[0].pixels)[1])

    changed = [image.clone() for image in images]
    changed[1][0, 0, 0, 0] += 0.5
    examples_changed = prepare_examples(changed, ["a", "b", "c"], resolution=64)
    cache = EncodingCache(tmp_path, LIMIT, "vae-a", "clip")
    result = _latents(examples_changed, encoder, cache)
    assert encoder.pictures == 4 and (cache.figures.hits, cache.figures.encoded) == (2, 1)
    assert torch.equal(result.means[1], CountingEncoder()(examples_changed[1].pixels)[0]), "never the old latent"

    other_vae = CountingEncoder(offset=1.0)
    result = _latents(_examples()[1], other_vae, EncodingCache(tmp_path, LIMIT, "vae-b", "clip"))
    assert other_vae.pictures == 3 and torch.equal(result.means[0], first.means[0] + 1.0)
    bigger = _examples(resolution=128)[1]
    _latents(bigger, encoder, EncodingCache(tmp_path, LIMIT, "vae-a", "clip"))
    assert encoder.pictures == 7, "another resolution is another picture for the VAE"


def test_a_picture_the_set_holds_twice_is_encoded_once(tmp_path):
    images, _ = _examples(2)
    examples = prepare_examples([images[0], images[1], images[0]], ["a", "b", "a again"], resolution=64)
    encoder = CountingEncoder()
    cache = EncodingCache(tmp_path, LIMIT, "vae", "clip")
    latents = _latents(examples, encoder, cache, mode="random")
    assert encoder.pictures == 2 and (cache.figures.hits, cache.figures.encoded) == (1, 2)
    assert torch.equal(latents.means[2], latents.means[0])
    assert not torch.equal(latents.latents([0], 1), latents.latents([2], 1)), "each example draws its own sample"


def test_a_cold_run_writes_each_round_before_it_encodes_the_next(tmp_path, monkeypatch):
    from hypernet_studio.hypernet.train import latents as latents_module

    monkeypatch.setattr(latents_module, "CACHE_ROUND", 2)
    _, examples = _examples(5)
    shards_seen = []
    encoder = CountingEncoder()

    def encode(pixels):
        shards_seen.append(len(list(tmp_path.glob("shard-*"))))
        return encoder(pixels)

    cache = EncodingCache(tmp_path, LIMIT, "vae", "clip")
    result = LatentCache(examples, encode, "deterministic", 0, CPU, chunk=8, cache=cache)
    assert shards_seen == [0, 1, 2] and encoder.pictures == 5, "rounds of 2, 2 and 1 pictures"
    assert all(torch.equal(result.means[i], CountingEncoder()(examples[i].pixels)[0]) for i in range(5))


def test_the_once_sample_is_drawn_from_the_cached_distribution_as_before(tmp_path):
    _, examples = _examples()
    plain = _latents(examples, CountingEncoder(), None, mode="once")
    EncodingCache(tmp_path, LIMIT, "vae", "clip")
    _latents(examples, CountingEncoder(), EncodingCache(tmp_path, LIMIT, "vae", "clip"), mode="once")
    cached = _latents(examples, CountingEncoder(), EncodingCache(tmp_path, LIMIT, "vae", "clip"), mode="once")
    assert torch.equal(cached.latents([0, 1], 5), plain.latents([0, 1], 5))
    assert torch.equal(cached.latents([2], 1), cached.latents([2], 9)), "one sample, the same at every use"


def test_weights_digest_differs_for_any_changed_weight():
    module = torch.nn.Linear(4, 3)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(module.state_dict())
    assert weights_digest(module) == weights_digest(twin)
    changed = torch.nn.Linear(4, 3)
    changed.load_state_dict(module.state_dict())
    with torch.no_grad():
        changed.bias[2] = torch.nextafter(changed.bias[2], torch.tensor(1.0))
    assert weights_digest(changed) != weights_digest(module)
    assert weights_digest(torch.nn.Linear(4, 3).to(torch.bfloat16)) != weights_digest(module)


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "delete"])
def test_a_damaged_shard_is_detected_and_rebuilt_never_used(tmp_path, damage):
    _, examples = _examples()
    encoder = CountingEncoder()
    _latents(examples, encoder, EncodingCache(tmp_path, LIMIT, "vae", "clip"))
    (shard,) = tmp_path.glob("shard-*.safetensors")
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(data[:-7]))
    elif damage == "flip a byte":
        data[-3] ^= 0x40
        shard.write_bytes(bytes(data))
    else:
        shard.unlink()
    rebuilt = _latents(examples, encoder, EncodingCache(tmp_path, LIMIT, "vae", "clip"))
    assert encoder.pictures == 6
    assert torch.equal(rebuilt.means[2], CountingEncoder()(examples[2].pixels)[0])
    index = json.loads((tmp_path / "index.json").read_text())
    assert shard.name not in index["shards"] and len(index["shards"]) == 1
    _latents(examples, encoder, EncodingCache(tmp_path, LIMIT, "vae", "clip"))
    assert encoder.pictures == 6, "the rebuilt shard is used"


def test_the_limit_evicts_the_shards_used_longest_ago(tmp_path):
    _, set_a = _examples(seed=1)
    _, set_b = _examples(seed=2)
    encoder = CountingEncoder()
    _latents(set_a, encoder, EncodingCache(tmp_path, LIMIT, "vae", "clip"))
    one_shard = next(tmp_path.glob("shard-*.safetensors")).stat().st_size
    _latents(set_b, encoder, EncodingCache(tmp_path, LIMIT, "vae", "clip"))
    _latents(set_a, encoder, EncodingCache(tmp_path, LIMIT, "vae", "clip"))  # a used after b
    assert encoder.pictures == 6
    cache = EncodingCache(tmp_path, int(one_shard * 1.5), "vae", "clip")
    _latents(_examples(seed=3)[1], encoder, cache)
    assert encoder.pictures == 9 and cache.figures.bytes <= one_shard * 1.5
    _latents(set_b, encoder, EncodingCache(tmp_path, LIMIT, "vae", "clip"))
    assert encoder.pictures == 12, "b, used longest ago, went first"
    assert len(list(tmp_path.glob("shard-*"))) == len(json.loads((tmp_path / "index.json").read_text())["shards"])


def test_prompts_are_kept_with_the_pooled_output(tmp_path):
    calls = []

    def encode(prompts):
        calls.extend(prompts)
        from hypernet_studio.hypernet.sd.components import TextConditioning

        return [TextConditioning(torch.full((2, 4), float(len(p))), torch.full((3,), float(len(p)) + 0.5))
                for p in prompts]

    TextCache(encode, CPU).warm_through(["a", "bb"], EncodingCache(tmp_path, LIMIT, "vae", "clip-1"), writes=True)
    texts = TextCache(encode, CPU)
    texts.warm_through(["bb", "a", "ccc"], EncodingCache(tmp_path, LIMIT, "vae", "clip-1"), writes=True)
    assert calls == ["a", "bb", "ccc"]
    batch = texts.batch(["a", "bb"])
    assert torch.equal(batch.context[1], torch.full((2, 4), 2.0))
    assert torch.equal(batch.pooled[0], torch.full((3,), 1.5))
    TextCache(encode, CPU).warm_through(["a"], EncodingCache(tmp_path, LIMIT, "vae", "clip-2"), writes=True)
    assert calls[-1] == "a", "another text encoder (or clip skip) misses"


WRITER = """
import sys
from pathlib import Path
import torch
from hypernet_studio.hypernet.train.encoding_cache import EncodingCache
print("ready", flush=True)
sys.stdin.readline()
folder, writer = Path(sys.argv[1]), int(sys.argv[2])
for round_index in range(ROUNDS):
    keys = [f"w{writer}-r{round_index}-{i}" for i in range(20)] + [f"shared-r{round_index}-{i}" for i in range(5)]
    EncodingCache(folder, 10**9, "vae", "clip").put({key: {"mean": torch.full((1, 4, 8, 8), float(sum(map(ord, key))))}
                                                       for key in keys})
"""
ROUNDS = 8


def _write_rounds(folder, writer):
    """What WRITER does, in this process."""
    for round_index in range(ROUNDS):
        keys = [f"w{writer}-r{round_index}-{i}" for i in range(20)] + [f"shared-r{round_index}-{i}" for i in range(5)]
        values = {key: {"mean": torch.full((1, 4, 8, 8), float(sum(map(ord, key))))} for key in keys}
        EncodingCache(folder, LIMIT, "vae", "clip").put(values)


def test_two_writers_at_once_never_corrupt_the_cache(tmp_path, pack_environment):
    """Another process (started fresh, as spawn does) and this one write at the same time."""
    other = subprocess.Popen([sys.executable, "-c", WRITER.replace("ROUNDS", str(ROUNDS)), str(tmp_path), "1"],
                             env=pack_environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "ready"
    other.stdin.write("go\n")
    other.stdin.flush()
    _write_rounds(tmp_path, 0)
    _, errors = other.communicate(timeout=120)
    assert other.returncode == 0, errors[-2000:]
    keys = [f"w{w}-r{r}-{i}" for w in (0, 1) for r in range(ROUNDS) for i in range(20)]
    keys += [f"shared-r{r}-{i}" for r in range(ROUNDS) for i in range(5)]
    found = EncodingCache(tmp_path, LIMIT, "vae", "clip").find(keys)
    assert set(found) == set(keys)
    assert all(torch.equal(found[k]["mean"], torch.full((1, 4, 8, 8), float(sum(map(ord, k))))) for k in keys)
    index = json.loads((tmp_path / "index.json").read_text())
    assert sorted(k for shard in index["shards"].values() for k in shard["keys"]) == sorted(keys), "each key once"
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unwritable_folder_leaves_the_run_uncached(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _, examples = _examples()
    cache = EncodingCache(blocker / "cache", LIMIT, "vae", "clip")
    result = _latents(examples, CountingEncoder(), cache)
    assert cache.failed is not None and torch.equal(result.means[0], CountingEncoder()(examples[0].pixels)[0])


def _counted_run(model, clip, vae, folder, counts, sizes=None, **overrides):
    images, captions = tiny_dataset(2, size=64)
    values = dict(name="cached", steps=1, learning_rate="0.001", templates=["a [filewords]"], csv_every=0,
                  save_every=0, preview_every=0, resolution=64, cache_dir=folder)
    values.update(overrides)
    outputs = run_training(model, clip, vae, TrainingData(images, captions), TrainConfig(**values),
                           spec=HypernetSpec(sizes=sizes))
    counts.append(outputs)
    return outputs


def test_a_second_headless_run_encodes_nothing(tmp_path, monkeypatch):
    from hypernet_studio.hypernet.sd.headless import headless_objects
    from hypernet_studio.hypernet.sd.tiny import build_tiny_components
    from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend

    calls = {"images": 0, "texts": 0}
    for method, name in (("encode_images", "images"), ("encode_texts", "texts")):
        original = getattr(DiffusersBackend, method)

        def counted(self, values, _original=original, _name=name):
            calls[_name] += len(values)
            return _original(self, values)

        monkeypatch.setattr(DiffusersBackend, method, counted)
    model, clip, vae = headless_objects(build_tiny_components(seed=0))
    runs = []
    cold = _counted_run(model, clip, vae, tmp_path, runs)
    assert calls == {"images": 2, "texts": 2}
    warm = _counted_run(model, clip, vae, tmp_path, runs)
    assert calls == {"images": 2, "texts": 2}, "a second run encodes nothing"
    assert warm.result.losses == cold.result.losses, "from the same latents and conditionings"
    assert any(note.startswith("cache: 2 hits, 0 encoded (prompts: 2 hits, 0 encoded)") for note in warm.notes)


class IdentifiedVAE(FakeVAE):
    def __init__(self):
        super().__init__()
        self.first_stage_model, self.encodes = torch.nn.Linear(3, 4), 0

    def encode(self, pixels):
        self.encodes += pixels.shape[0]
        return super().encode(pixels)


class IdentifiedCLIP(FakeCLIP):
    def __init__(self):
        super().__init__()
        self.cond_stage_model, self.layer_idx, self.encodes = torch.nn.Linear(3, 4), None, 0

    def encode_from_tokens(self, tokens, return_pooled=False):
        self.encodes += 1
        return super().encode_from_tokens(tokens, return_pooled)


def test_a_second_comfyui_run_encodes_nothing_and_says_mean_only(tmp_path):
    from hypernet_studio.hypernet.train.backend_comfy import ComfyBackend

    model, _, _ = comfy_objects()
    vae, clip = IdentifiedVAE(), IdentifiedCLIP()
    runs, sizes = [], [CHANNELS, CONTEXT]
    _counted_run(model, clip, vae, tmp_path, runs, sizes, steps=2)
    assert (vae.encodes, clip.encodes) == (2, 2)
    _counted_run(model, clip, vae, tmp_path, runs, sizes, steps=2, learning_rate="0.05")
    assert (vae.encodes, clip.encodes) == (2, 2)
    assert runs[0].result.losses[0] == runs[1].result.losses[0], "the same cached latents, prompts and draws"
    assert runs[0].result.losses[1] != runs[1].result.losses[1], "trained at another rate"
    assert "mean-only" in ComfyBackend(model, clip, vae).vae_identity()
    images, captions = tiny_dataset(2, size=64)
    config = TrainConfig(name="cached", steps=3, templates=["a [filewords]"], csv_every=0, save_every=0,
                         preview_every=0, resolution=64, cache_dir=tmp_path)
    resumed = run_training(model, clip, vae, TrainingData(images, captions), config,
                           hypernetwork=runs[0].result.hypernetwork)
    other_spec = run_training(model, clip, vae, TrainingData(images, captions), replace(config, steps=1),
                              spec=HypernetSpec(sizes=[CHANNELS, CONTEXT], layer_structure=[1, 3, 1]))
    assert resumed.result.first_step == 3 and other_spec.result.first_step == 1
    assert (vae.encodes, clip.encodes) == (2, 2), "a resume and another spec encode nothing"
    clip.layer_idx = -2  # CLIP Set Last Layer
    _counted_run(model, clip, vae, tmp_path, runs, sizes)
    assert (vae.encodes, clip.encodes) == (2, 4), "another clip layer: the prompts miss, the pictures hit"


def test_the_limit_comes_from_the_environment():
    assert encoding_cache.cache_limit_bytes({}) == encoding_cache.CACHE_LIMIT_MB * 1_000_000
    assert encoding_cache.cache_limit_bytes({encoding_cache.CACHE_LIMIT_ENV: "2.5"}) == 2_500_000
    assert encoding_cache.cache_limit_bytes({encoding_cache.CACHE_LIMIT_ENV: "lots"}) == \
        encoding_cache.CACHE_LIMIT_MB * 1_000_000
