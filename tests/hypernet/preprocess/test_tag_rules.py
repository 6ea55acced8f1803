"""The tag rule language: every rule against captions written out here, summaries, warnings, and
parse errors that name the line."""
import pytest

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.preprocess.tag_rules import edit_captions, parse_rules

CAPTIONS = ["1girl, long hair, watermark, smile", "text, 1girl, (watermark:1.2)", "solo, blue sky"]


def test_remove_drops_every_named_tag_whatever_its_weight():
    result = edit_captions(CAPTIONS, "remove: watermark, text, signature")
    assert result.captions == ["1girl, long hair, smile", "1girl", "solo, blue sky"]
    assert result.summary == ["remove: 3 tags from 2 captions"]
    assert result.warnings == []


def test_a_caption_no_rule_changes_comes_out_exactly_as_it_went_in():
    captions = ["a,b ,  c", "x,  y"]
    result = edit_captions(captions, "remove: y")
    assert result.captions == ["a,b ,  c", "x"]


def test_replace_renames_a_tag_and_keeps_its_emphasis():
    captions = ["1girl, smile", "(1girl:1.3), solo", "girl"]
    result = edit_captions(captions, "replace: 1girl -> woman")
    assert result.captions == ["woman, smile", "(woman:1.3), solo", "girl"]
    assert result.summary == ["replace: 1girl -> woman in 2 captions"]
    several = edit_captions(["1girl, smile"], "replace: 1girl -> woman, solo")
    assert several.captions == ["woman, solo, smile"]


def test_regex_rewrites_each_tag_name_with_groups():
    captions = ["long hair, blue eyes, short hair", "hair, red hair"]
    result = edit_captions(captions, r"regex: ^(.*) hair$ -> \1-hair")
    assert result.captions == ["long-hair, blue eyes, short-hair", "hair, red-hair"]
    assert result.summary == [r"regex: ^(.*) hair$ -> \1-hair: 3 tags changed in 2 captions"]
    underscores = edit_captions(["long_hair, (blue_eyes:1.1)"], "regex: _ -> -")
    assert underscores.captions == ["long-hair, (blue-eyes:1.1)"]
    emptied_and_split = edit_captions(["a, xy, b"], "regex: ^x(y)$ -> \\1, z")
    assert emptied_and_split.captions == ["a, y, z, b"]
    assert edit_captions(["a, xy, b"], "regex: ^xy$ -> ,").captions == ["a, b"]


def test_prepend_and_append_put_tags_first_or_last_once():
    captions = ["a, mystyle, b", "c"]
    result = edit_captions(captions, "prepend: mystyle\nappend: (end:0.5), z")
    assert result.captions == ["mystyle, a, b, (end:0.5), z", "mystyle, c, (end:0.5), z"]
    assert result.summary == ["prepend: mystyle put first in 2 captions",
                              "append: (end:0.5), z put last in 2 captions"]
    assert edit_captions(["mystyle, a"], "prepend: mystyle").summary == ["prepend: mystyle put first in 0 captions"]


def test_keep_first_dedupe_and_sort():
    captions = ["c, a, b, a, d", "b, b", "a"]
    assert edit_captions(captions, "keep_first: 2").captions == ["c, a", "b, b", "a"]
    assert edit_captions(captions, "keep_first: 2").summary == ["keep_first 2: 3 tags cut from 1 captions"]
    assert edit_captions(captions, "dedupe").captions == ["c, a, b, d", "b", "a"]
    assert edit_captions(captions, "dedupe").summary == ["dedupe: 2 repeated tags from 2 captions"]
    assert edit_captions(captions, "sort: alpha").captions == ["a, a, b, c, d", "b, b", "a"]
    # by how many captions hold the tag: a 2, b 2, c 1, d 1 (ties alphabetical)
    assert edit_captions(captions, "dedupe\nsort: count").captions == ["a, b, c, d", "b", "a"]
    assert edit_captions(["B, a, c"], "SORT: Alpha").captions == ["a, B, c"]
    assert edit_captions(captions, "sort: alpha").summary == ["sort by alpha: 1 captions reordered"]


def test_rules_apply_in_order_and_comments_and_blank_lines_are_skipped():
    rules = "# tidy up\n\nremove: text\n  replace: 1girl -> woman  \n# the trigger word first\nprepend: mystyle\n"
    result = edit_captions(CAPTIONS, rules)
    assert result.captions == ["mystyle, woman, long hair, watermark, smile", "mystyle, woman, (watermark:1.2)",
                               "mystyle, solo, blue sky"]
    assert len(result.summary) == 3


def test_an_emptied_caption_is_kept_and_reported():
    result = edit_captions(["text, watermark", "solo", ""], "remove: text, watermark")
    assert result.captions == ["", "solo", ""]
    assert result.warnings == ["1 caption(s) have no tags left after the rules (kept, empty): caption 1"]


def test_unicode_tags_and_patterns():
    captions = ["猫耳, 青い目, ウォーターマーク", "café, naïve"]
    rules = "remove: ウォーターマーク\nreplace: 猫耳 -> ねこみみ\nregex: ï -> i\nprepend: スタイル"
    result = edit_captions(captions, rules)
    assert result.captions == ["スタイル, ねこみみ, 青い目", "スタイル, café, naive"]
    assert edit_captions(["été"], r"regex: ^(\w)\w+$ -> \1").captions == ["é"]


@pytest.mark.parametrize("rules,message", [
    ("remove: a\nfrobnicate: b", "line 2: unknown rule 'frobnicate'"),
    ("# c\n\nreplace: a", "line 3: replace needs 'old -> new'"),
    ("replace: a, b -> c", "line 1: replace renames one tag"),
    ("regex: (unclosed -> x", "line 1: regex '(unclosed' -> 'x': missing ), unterminated subpattern at position 1"),
    (r"regex: ^(a)$ -> \2", "line 1: regex '^(a)$' -> '\\\\2': invalid group reference 2 at position 2"),
    ("keep_first: two", "line 1: keep_first needs a whole number"),
    ("keep_first: 0", "line 1: keep_first needs a whole number"),
    ("sort: random", "line 1: sort takes alpha or count"),
    ("sort alpha", "line 1: sort needs ':'"),
    ("dedupe: a", "line 1: dedupe takes nothing"),
    ("remove:", "line 1: remove needs one or more"),
    ("remove: a\n\nshuffle_keep: 1", "line 3: shuffle_keep is not a rule: how many leading tags stay in place"),
])
def test_mistakes_are_refused_with_their_line(rules, message):
    with pytest.raises(InputError) as raised:
        parse_rules(rules)
    assert raised.value.input_name == "rules"
    assert raised.value.message.startswith(message), raised.value.message


def test_no_rules_change_nothing():
    assert parse_rules("# only a comment\n\n") == []
    result = edit_captions(CAPTIONS, "")
    assert result.captions == CAPTIONS and result.summary == [] and result.warnings == []
