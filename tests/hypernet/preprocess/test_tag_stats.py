"""Tag statistics: how captions read as tags, counts against values written out here, token counts
with the bundled CLIP vocabulary, the table, the CSV and the chart."""
import numpy as np
import pytest

from hypernet_studio.hypernet.preprocess.tag_stats import (
    CHUNK_TOKENS,
    bundled_tokenizer,
    caption_token_counts,
    stats_csv,
    stats_table,
    stats_warnings,
    tag_chart,
    tag_statistics,
)
from hypernet_studio.hypernet.preprocess.tag_syntax import Tag, encoder_text, join_tags, parse_tag, split_tags

# Repeated tags, spacing variants, escaped brackets and weights, as taggers and people write them.
CAPTIONS = [
    "1girl, long hair, (smile:1.2), hat \\(object\\), 1girl",
    "1girl,long  hair ,  smile",
    " 1girl , ((smile)), (hat \\(object\\):0.9), text",
    "solo, [tag], 1girl",
]


@pytest.mark.parametrize("written,name,text", [
    ("(tag:1.2)", "tag", "(tag:1.2)"),
    ("( long   hair : 1.2 )", "long hair", "(long hair:1.2)"),
    ("((tag))", "tag", "((tag))"),
    ("(tag)", "tag", "(tag)"),
    ("hat \\(object\\)", "hat \\(object\\)", "hat \\(object\\)"),
    ("(hat \\(object\\):0.9)", "hat \\(object\\)", "(hat \\(object\\):0.9)"),
    ("[tag]", "[tag]", "[tag]"),  # square brackets mean nothing to ComfyUI's encoder
    ("(a) (b)", "(a) (b)", "(a) (b)"),  # two groups, not one around the whole tag
    ("(unclosed", "(unclosed", "(unclosed"),
    ("score:9", "score:9", "score:9"),
])
def test_a_tag_is_named_without_its_emphasis_and_keeps_it_in_writing(written, name, text):
    tag = parse_tag(written)
    assert tag.name == name and tag.text == text


def test_a_caption_splits_at_every_comma_and_drops_empty_pieces():
    assert [t.name for t in split_tags(" a ,b,, (c:1.1) ,")] == ["a", "b", "c"]
    assert join_tags([Tag("a"), Tag("c", "(", ":1.1)")]) == "a, (c:1.1)"
    assert encoder_text(parse_tag("(hat \\(object\\):0.9)")) == "hat (object)"


def test_counts_are_pictures_per_bare_name():
    stats = tag_statistics(CAPTIONS, count_tokens=None)
    assert stats.counts == [("1girl", 4), ("smile", 3), ("hat \\(object\\)", 2), ("long hair", 2),
                            ("[tag]", 1), ("solo", 1), ("text", 1)]
    assert stats.caption_count == 4 and stats.distinct == 7
    assert stats.tags_per_caption == [5, 3, 4, 3]
    assert stats.in_every_caption() == ["1girl"]
    assert stats.repeats == [(0, "1girl")]
    assert stats.share(3) == 0.75


def test_table_lists_the_top_tags_and_the_summary():
    table = stats_table(tag_statistics(CAPTIONS, count_tokens=None), top_n=3)
    assert table.splitlines() == [
        "4 captions, 7 distinct tags; tags per caption: min 3 / mean 3.8 / max 5",
        "",
        " count   share  tag",
        "     4  100.0%  1girl",
        "     3   75.0%  smile",
        "     2   50.0%  hat \\(object\\)",
        "... and 4 more (the CSV lists every tag)",
    ]
    assert stats_table(tag_statistics([], count_tokens=None)).splitlines()[0] == "no captions"


def test_csv_has_every_tag_with_count_and_share():
    assert stats_csv(tag_statistics(["a, b", "a", "a, \"q\""], count_tokens=None)) == (
        'tag,count,share\na,3,1.0\n"""q""",1,0.3333\nb,1,0.3333\n')


def test_token_counts_equal_the_tokenizer_on_the_text_the_encoder_reads():
    assert caption_token_counts([split_tags("red hair, blue eyes")]) == [5]  # red hair , blue eyes
    tokenizer = bundled_tokenizer()
    captions = CAPTIONS + ["hat \\(object\\), x", "\u732b\u8033, \u9752\u3044\u76ee", ""]
    tag_lists = [split_tags(caption) for caption in captions]
    expected = [len(tokenizer(", ".join(encoder_text(t) for t in tags), add_special_tokens=False)["input_ids"])
                for tags in tag_lists]
    assert caption_token_counts(tag_lists) == expected
    assert expected[-1] == 0 and expected[0] == 14  # 1 girl , long hair , smile , hat ( object ), 1 girl


def test_warnings_name_tags_in_every_caption_long_captions_repeats_and_empty_ones():
    long_caption = ", ".join(f"tag{i}" for i in range(40))  # 40 x "tag" "N" + 39 commas = 119 tokens
    stats = tag_statistics(["solo, a", "solo, b, b", long_caption + ", solo", ""])
    assert stats.token_counts[2] > CHUNK_TOKENS >= stats.token_counts[0]
    assert stats.long_captions() == [(2, stats.token_counts[2])]
    warnings = stats_warnings(stats)
    assert len(warnings) == 3
    assert warnings[0].startswith("1 caption(s) longer than the text encoder's 75-token chunk (longest: caption 3, ")
    assert warnings[1].startswith("1 caption(s) hold a tag twice (e.g. caption 2: b)")
    assert warnings[2] == "1 caption(s) have no tags (e.g. caption 4)"
    every = stats_warnings(tag_statistics(["solo, a", "solo, b"], count_tokens=None))
    assert every[0].startswith("in every caption: solo (")
    assert stats_warnings(tag_statistics(["only one"], count_tokens=None)) == []


def _bar_widths(image):
    """Width in pixels of each bar (the chart's blue), top to bottom."""
    pixels = (image[0].numpy() * 255).round()
    blue = (np.abs(pixels - np.array([31, 95, 191])).max(axis=-1) < 30)
    rows = np.flatnonzero(blue.any(axis=1))
    if not rows.size:
        return []
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    return [int(blue[band].sum(axis=1).max()) for band in bands]


def test_chart_draws_one_bar_per_top_tag_as_long_as_its_count():
    stats = tag_statistics(["a, b", "a, c", "a", "a, b"], count_tokens=None)  # a 4, b 2, c 1
    image = tag_chart(stats, top_n=3)
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[3] == 3 and image.shape[2] == 800
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    widths = _bar_widths(image)
    assert len(widths) == 3
    assert widths[0] == pytest.approx(2 * widths[1], abs=3) and widths[1] == pytest.approx(2 * widths[2], abs=3)
    assert tag_chart(stats, top_n=1).shape[1] < tag_chart(tag_statistics([", ".join(map(str, range(40)))],
                                                                          count_tokens=None), top_n=40).shape[1]
    assert len(_bar_widths(tag_chart(tag_statistics([], count_tokens=None)))) == 0
