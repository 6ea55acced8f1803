"""Deepbooru tag post-processing on injected probabilities (A1111's rules, docs/preprocessing.md)."""
import pytest

from hypernet_studio.hypernet.taggers.deepbooru_post import TagOptions, format_tags, select_tags

TAGS = ["1girl", "long_hair", "rating:safe", "smile_(happy)", ":d", "solo", "back\\slash"]
PROBS = [0.99, 0.7, 0.95, 0.5, 0.6, 0.49, 0.8]


def test_defaults_threshold_alpha_spaces_escape_and_no_ratings():
    # kept: p >= 0.5, rating dropped; sorted by raw tag; "_" -> " "; "\\", "(", ")" escaped.
    assert format_tags(PROBS, TAGS, TagOptions()) == "1girl, :d, back\\\\slash, long hair, smile \\(happy\\)"


def test_sort_by_score_underscores_unescaped_and_ranks():
    options = TagOptions(sort_alpha=False, use_spaces=False, escape=False, include_ranks=True)
    assert format_tags(PROBS, TAGS, options) == (
        "(1girl:0.990), (back\\slash:0.800), (long_hair:0.700), (:d:0.600), (smile_(happy):0.500)")


def test_filter_matches_either_spelling_and_ratings_can_stay():
    options = TagOptions(filter_tags=" long hair , :d,", drop_ratings=False, threshold=0.9)
    assert [t for t, _ in select_tags(PROBS, TAGS, options)] == ["1girl", "rating:safe"]
    assert format_tags(PROBS, TAGS, TagOptions(filter_tags="long_hair, 1girl, smile (happy)")) == ":d, back\\\\slash"


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 probabilities for 3 tags"):
        format_tags([0.1, 0.2], ["a", "b", "c"], TagOptions())
