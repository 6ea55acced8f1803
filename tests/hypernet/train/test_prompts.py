"""Template sets and prompt rendering with seeded tag shuffle/dropout (docs/training.md)."""
import random

import pytest

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.train.prompts import PromptSource, render_prompt
from hypernet_studio.hypernet.train.templates import TEMPLATE_SETS, template_lines


def test_every_set_loads_and_uses_its_placeholders():
    for name in TEMPLATE_SETS:
        lines = template_lines(name)
        assert lines, name
        joined = "\n".join(lines)
        assert ("[filewords]" in joined) == name.endswith("filewords") or name == "hypernetwork"
        assert ("[name]" in joined) == (name in ("style_filewords", "style", "subject", "subject_filewords"))
    assert template_lines("none") == ["picture"]


def test_custom_template_and_errors():
    assert template_lines("custom", "a [name]\n\n  b [filewords]  \n") == ["a [name]", "b [filewords]"]
    with pytest.raises(ValueError, match="no template lines"):
        template_lines("custom", "  \n")
    with pytest.raises(ValueError, match="unknown prompt template"):
        template_lines("nope")


def test_render_without_shuffle_keeps_tag_text_exactly():
    out = render_prompt("art of [filewords] by [name]", "red, blue hat, cat", "zz", random.Random(0))
    assert out == "art of red, blue hat, cat by zz"


def _reference(caption, seed, dropout, shuffle):
    # A1111 semantics written out: split on ',', drop if random() <= p, then shuffle, join with ','.
    rng = random.Random(seed)
    tags = caption.split(",")
    if dropout:
        tags = [t for t in tags if rng.random() > dropout]
    if shuffle:
        rng.shuffle(tags)
    return ",".join(tags)


@pytest.mark.parametrize("dropout,shuffle", [(0.0, True), (0.5, False), (0.3, True)])
def test_shuffle_and_dropout_follow_a1111_order(dropout, shuffle):
    caption = "a, b, c, d, e, f, g, h"
    for seed in range(20):
        got = render_prompt("[filewords]", caption, "n", random.Random(seed), shuffle, dropout)
        assert got == _reference(caption, seed, dropout, shuffle)


def test_prompt_source_is_seeded_and_fixed_without_shuffle():
    captions = ["a, b, c, d", "e, f, g, h"]
    fixed = PromptSource(captions, ["x [filewords] [name]", "y [filewords] [name]"], "net", seed=3)
    assert fixed.prompt(0, 0) == fixed.prompt(0, 99)
    assert len(fixed.distinct_fixed_prompts()) == 2
    varying = PromptSource(captions, ["[filewords]"], "net", seed=3, shuffle_tags=True)
    again = PromptSource(captions, ["[filewords]"], "net", seed=3, shuffle_tags=True)
    seen = {varying.prompt(0, m) for m in range(30)}
    assert len(seen) > 3
    assert all(varying.prompt(1, m) == again.prompt(1, m) for m in range(30))
    assert all(sorted(p.split(",")) == sorted(captions[0].split(",")) for p in seen)
    other_seed = PromptSource(captions, ["[filewords]"], "net", seed=4, shuffle_tags=True)
    assert [other_seed.prompt(0, m) for m in range(10)] != [varying.prompt(0, m) for m in range(10)]


def test_keep_tokens_zero_draws_exactly_as_before():
    caption = "a, b, c, d, e, f, g, h"
    for seed in range(50):
        got = render_prompt("[filewords]", caption, "n", random.Random(seed), True, 0.3, keep_tokens=0)
        assert got == _reference(caption, seed, 0.3, True)


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keep_tokens_never_move_or_drop_the_first_tags(keep):
    caption = "trigger, style, c, d, e, f, g, h"
    tags = caption.split(",")
    seen_orders = set()
    for seed in range(300):
        for shuffle, dropout in [(True, 0.0), (False, 0.5), (True, 0.5), (True, 0.9)]:
            got = render_prompt("[filewords]", caption, "n", random.Random(seed), shuffle, dropout, keep).split(",")
            assert got[:keep] == tags[:keep], (seed, shuffle, dropout)
            rest = got[keep:]
            assert set(rest) <= set(tags[keep:]) and len(rest) == len(set(rest))
            seen_orders.add(tuple(rest))
    assert len(seen_orders) > 100, "the other tags still shuffle and drop"


def test_keep_tokens_longer_than_the_caption_keeps_it_whole():
    for seed in range(20):
        assert render_prompt("[filewords]", "a, b", "n", random.Random(seed), True, 0.5, keep_tokens=5) == "a, b"


def test_prompt_source_keeps_leading_tags_and_refuses_a_negative_count():
    source = PromptSource(["trigger, a, b, c, d"], ["[filewords] by [name]"], "net", seed=1, shuffle_tags=True,
                          tag_dropout=0.4, keep_tokens=1)
    prompts = {source.prompt(0, m) for m in range(200)}
    assert len(prompts) > 10 and "trigger by net" in prompts  # every other tag dropped
    assert all(p.startswith(("trigger,", "trigger by")) and p.endswith(" by net") for p in prompts)
    with pytest.raises(InputError, match="keep_tokens"):
        PromptSource(["a"], ["[filewords]"], "net", seed=1, keep_tokens=-1)


def test_training_builds_prompts_with_keep_tokens():
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.spec import HypernetSpec
    from hypernet_studio.hypernet.train.batches import prepare_examples
    from hypernet_studio.hypernet.train.config import TrainConfig
    from hypernet_studio.hypernet.train.run import train_hypernetwork

    from .fakes import CHANNELS, CONTEXT, FakeBackend, tiny_dataset

    images, captions = tiny_dataset(4)  # "tag{i}, red, blue, shape{i % 2}"
    examples = prepare_examples(images, captions, None, resolution=16, multiple=8)
    network = Hypernetwork.build(HypernetSpec(layer_structure=[1, 2, 1], sizes=[CHANNELS, CONTEXT]), seed=0,
                                 name="net")
    backend = FakeBackend()
    config = TrainConfig(name="net", templates=("[filewords]",), steps=12, learning_rate="0.001", seed=7, save_every=0,
                         preview_every=0, csv_every=0, shuffle_tags=True, tag_dropout=0.3, keep_tokens=1)
    train_hypernetwork(backend, network, examples, config)
    prompts = set(backend.encoded_texts)
    assert len(prompts) > 4
    assert all(p.split(",")[0] in {f"tag{i}" for i in range(4)} for p in prompts), prompts
