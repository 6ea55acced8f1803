"""Template sets and prompt rendering with seeded tag shuffle/dropout (docs/training.md)."""
import random

import pytest

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
