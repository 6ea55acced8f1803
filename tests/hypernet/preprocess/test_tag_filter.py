"""Tag filter expressions: precedence, parentheses, names with spaces, unknown tags, syntax errors
with their position, and splitting parallel lists in step."""
import pytest
import torch

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.preprocess.lists import DatasetLists
from hypernet_studio.hypernet.preprocess.tag_filter import parse_expression, split_by_tags, unknown_names


def _keeps(expression, caption_names):
    return parse_expression(expression).matches(set(caption_names))


@pytest.mark.parametrize("expression,names,kept", [
    ("a OR b AND c", {"a"}, True),  # a OR (b AND c)
    ("a OR b AND c", {"b"}, False),
    ("(a OR b) AND c", {"a"}, False),
    ("(a OR b) AND c", {"b", "c"}, True),
    ("NOT a AND b", {"b"}, True),  # (NOT a) AND b
    ("NOT a AND b", {"a", "b"}, False),
    ("NOT (a AND b)", {"a"}, True),
    ("NOT NOT a", {"a"}, True),
    ("a and not b or c", {"a", "b"}, False),  # keywords in any case: (a AND NOT b) OR c
    ("a and not b or c", {"a", "b", "c"}, True),
    ("((a))", {"a"}, True),
    ("", set(), True),  # an empty expression keeps every picture
    ("   ", {"x"}, True),
])
def test_precedence_not_then_and_then_or(expression, names, kept):
    assert _keeps(expression, names) is kept


def test_names_may_hold_spaces_escaped_brackets_and_quoted_keywords():
    assert _keeps("NOT (text OR long   hair)", {"long hair"}) is False
    assert _keeps("NOT (text OR long hair)", {"long", "hair"}) is True
    assert _keeps("hat \\(object\\) AND solo", {"hat \\(object\\)", "solo"}) is True
    assert _keeps('"black and white" OR "(x)"', {"black and white"}) is True
    assert _keeps('"black and white" OR "(x)"', {"(x)"}) is True
    assert parse_expression("NOT (text OR long hair)").names() == {"text", "long hair"}


def test_unknown_tags_match_nothing_and_are_listed():
    captions = ["solo, smile", "(text:1.1), smile"]
    expression = parse_expression("NOT (text OR watermark OR signature)")
    assert [expression.matches({"solo", "smile"}), expression.matches({"text", "smile"})] == [True, False]
    assert unknown_names(expression, captions) == ["signature", "watermark"]
    assert _keeps("watermark", {"solo"}) is False


@pytest.mark.parametrize("expression,message", [
    ("a AND", "expected a tag name, NOT or '(' but the expression ends at position 6"),
    ("a AND   ", "expected a tag name, NOT or '(' but the expression ends at position 6"),
    ("(a OR b", "'(' is never closed: it opens at position 1"),
    ("a OR b)", "unexpected ')' at position 7"),
    ("a AND OR b", "expected a tag name, NOT or '(' but found 'OR' at position 7"),
    ("()", "expected a tag name, NOT or '(' but found ')' at position 2"),
    ("a (b)", "unexpected '(' (join with AND or OR) at position 3"),
    ('"a b" c', "unexpected 'c' (join with AND or OR) at position 7"),
    ('a OR "b', "a quote is never closed: it opens at position 6"),
    ("a, b", "',' is not part of an expression: join tags with OR or AND at position 2"),
    ("NOT", "expected a tag name, NOT or '(' but the expression ends at position 4"),
])
def test_syntax_errors_name_the_position(expression, message):
    with pytest.raises(InputError) as raised:
        parse_expression(expression)
    assert raised.value.input_name == "expression"
    assert raised.value.message == message


def _dataset(captions):
    lists = DatasetLists()
    for index, caption in enumerate(captions):
        lists.add(torch.full((1, 2, 2, 3), float(index)), torch.full((1, 2, 2), float(index)), caption, f"s{index}")
    return lists


def test_split_keeps_images_masks_captions_and_stems_in_step():
    lists = _dataset(["solo", "text, solo", "smile", "watermark"])
    kept, dropped = split_by_tags(lists, parse_expression("NOT (text OR watermark)"))
    assert kept.captions == ["solo", "smile"] and kept.stems == ["s0", "s2"]
    assert [float(i[0, 0, 0, 0]) for i in kept.images] == [0.0, 2.0]
    assert [float(m[0, 0, 0]) for m in kept.masks] == [0.0, 2.0]
    assert dropped.captions == ["text, solo", "watermark"] and dropped.stems == ["s1", "s3"]
    assert [float(i[0, 0, 0, 0]) for i in dropped.images] == [1.0, 3.0]
    assert [float(m[0, 0, 0]) for m in dropped.masks] == [1.0, 3.0]
    everything, nothing = split_by_tags(lists, parse_expression(""))
    assert everything.stems == ["s0", "s1", "s2", "s3"] and nothing.images == []


def test_split_refuses_lists_of_different_lengths():
    lists = _dataset(["a", "b"])
    lists.stems.pop()
    with pytest.raises(InputError, match="has 1 items for 2 images") as raised:
        split_by_tags(lists, parse_expression("a"))
    assert raised.value.input_name == "stems"
