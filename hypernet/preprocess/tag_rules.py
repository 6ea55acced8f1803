"""Bulk tag edits over a caption list: a small rule language, one rule per line, applied in order.

    remove: watermark, text, signature    every tag with one of these names goes
    replace: 1girl -> woman               a tag named 1girl is renamed (its emphasis kept);
                                          several tags on the right replace it with all of them
    regex: ^(.*) hair$ -> \\1-hair         Python regular expression on each tag's name, groups \\1..;
                                          a name that becomes empty is removed, one with commas splits
    prepend: mystyle, other               these tags first (a copy elsewhere in the caption moves)
    append: tags                          these tags last (likewise)
    keep_first: 20                        at most this many tags per caption (the first ones)
    dedupe                                a repeated tag name keeps only its first place
    sort: alpha | count                   by name, or by how many captions hold the tag (most first)

`#` starts a comment line; blank lines are skipped; rule names are case-insensitive; the first
"->" on a line separates the two sides. Tag names follow tag_syntax.py (weights and spacing do not
matter, case does). A caption no rule changes comes out exactly as it went in; a changed one is
written back with ", " between its tags. A caption left with no tags stays in the list, empty,
and is reported. There is deliberately no rule for tags that stay fixed while shuffled: that is
the trainer's keep_tokens setting, which applies when prompts are built."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from ..errors import InputError
from .tag_syntax import Tag, collapse_spaces, join_tags, split_tags, tag_names

INPUT_NAME = "rules"
SORT_ORDERS = ("alpha", "count")
ARROW = "->"
TagLists = list[list[Tag]]


class Rule(Protocol):
    def apply(self, captions: TagLists) -> tuple[TagLists, str]:
        """The edited tag lists and one summary line."""


def _edit_each(captions: TagLists, edit: Callable[[list[Tag]], list[Tag]]) -> tuple[TagLists, int, int]:
    """`edit` applied to every caption: the results, captions changed, and tags that went away."""
    out, changed, dropped = [], 0, 0
    for tags in captions:
        edited = edit(tags)
        changed += edited != tags
        dropped += max(0, len(tags) - len(edited))
        out.append(edited)
    return out, changed, dropped


def _retagged(tag: Tag, new_name: str) -> list[Tag]:
    """`tag` renamed to `new_name`: nothing when empty, several tags when it holds commas."""
    pieces = split_tags(new_name)
    if len(pieces) == 1 and not pieces[0].opening:
        return [tag.renamed(pieces[0].name)]
    return pieces


@dataclass(frozen=True)
class Remove:
    names: frozenset

    def apply(self, captions: TagLists) -> tuple[TagLists, str]:
        out, changed, dropped = _edit_each(captions, lambda tags: [t for t in tags if t.name not in self.names])
        return out, f"remove: {dropped} tags from {changed} captions"


@dataclass(frozen=True)
class Replace:
    target: str
    replacement: tuple

    def apply(self, captions: TagLists) -> tuple[TagLists, str]:
        def edit(tags: list[Tag]) -> list[Tag]:
            return [new for tag in tags
                    for new in (self._replacing(tag) if tag.name == self.target else [tag])]
        out, changed, _ = _edit_each(captions, edit)
        return out, f"replace: {self.target} -> {join_tags(self.replacement)} in {changed} captions"

    def _replacing(self, tag: Tag) -> list[Tag]:
        if len(self.replacement) == 1 and not self.replacement[0].opening:
            return [tag.renamed(self.replacement[0].name)]
        return list(self.replacement)


@dataclass(frozen=True)
class RegexReplace:
    pattern: re.Pattern
    replacement: str

    def apply(self, captions: TagLists) -> tuple[TagLists, str]:
        renamed = 0

        def edit(tags: list[Tag]) -> list[Tag]:
            nonlocal renamed
            out = []
            for tag in tags:
                name = collapse_spaces(self.pattern.sub(self.replacement, tag.name))
                renamed += name != tag.name
                out += [tag] if name == tag.name else _retagged(tag, name)
            return out
        out, changed, _ = _edit_each(captions, edit)
        return out, f"regex: {self.pattern.pattern} -> {self.replacement}: {renamed} tags changed in {changed} captions"


@dataclass(frozen=True)
class Place:
    tags: tuple
    first: bool

    def apply(self, captions: TagLists) -> tuple[TagLists, str]:
        names = {tag.name for tag in self.tags}

        def edit(tags: list[Tag]) -> list[Tag]:
            others = [tag for tag in tags if tag.name not in names]
            return [*self.tags, *others] if self.first else [*others, *self.tags]
        out, changed, _ = _edit_each(captions, edit)
        where = "first" if self.first else "last"
        return out, f"{'prepend' if self.first else 'append'}: {join_tags(self.tags)} put {where} in {changed} captions"


@dataclass(frozen=True)
class KeepFirst:
    count: int

    def apply(self, captions: TagLists) -> tuple[TagLists, str]:
        out, changed, dropped = _edit_each(captions, lambda tags: tags[:self.count])
        return out, f"keep_first {self.count}: {dropped} tags cut from {changed} captions"


@dataclass(frozen=True)
class Dedupe:
    def apply(self, captions: TagLists) -> tuple[TagLists, str]:
        def edit(tags: list[Tag]) -> list[Tag]:
            seen, kept = set(), []
            for tag in tags:
                if tag.name not in seen:
                    seen.add(tag.name)
                    kept.append(tag)
            return kept
        out, changed, dropped = _edit_each(captions, edit)
        return out, f"dedupe: {dropped} repeated tags from {changed} captions"


@dataclass(frozen=True)
class Sort:
    order: str

    def apply(self, captions: TagLists) -> tuple[TagLists, str]:
        holders = Counter(name for tags in captions for name in {tag.name for tag in tags})

        def key(tag: Tag) -> tuple:
            alphabetical = (tag.name.casefold(), tag.name)
            return alphabetical if self.order == "alpha" else (-holders[tag.name], *alphabetical)
        out, changed, _ = _edit_each(captions, lambda tags: sorted(tags, key=key))
        return out, f"sort by {self.order}: {changed} captions reordered"


@dataclass
class EditResult:
    """The edited captions (same length and order), one summary line per rule, and warnings."""

    captions: list[str]
    summary: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _fail(line: int, message: str) -> InputError:
    return InputError(INPUT_NAME, f"line {line}: {message}")


def _two_sides(kind: str, argument: str, line: int) -> tuple[str, str]:
    left, arrow, right = argument.partition(ARROW)
    if not arrow or not left.strip() or not right.strip():
        raise _fail(line, f"{kind} needs 'old {ARROW} new', got {argument!r}")
    return left.strip(), right.strip()


def _replace_rule(argument: str, line: int) -> Replace:
    left, right = _two_sides("replace", argument, line)
    if len(tag_names(left)) != 1:
        raise _fail(line, f"replace renames one tag: {left!r} holds {len(tag_names(left))} (use one rule each)")
    return Replace(tag_names(left)[0], tuple(split_tags(right)))


def _regex_rule(argument: str, line: int) -> RegexReplace:
    pattern_text, replacement = _two_sides("regex", argument, line)
    try:
        pattern = re.compile(pattern_text)
        pattern.sub(replacement, "")  # group references in the replacement are checked here
    except re.error as exc:
        where = f" at position {exc.pos + 1}" if exc.pos is not None else ""
        raise _fail(line, f"regex {pattern_text!r} -> {replacement!r}: {exc.msg}{where}") from None
    return RegexReplace(pattern, replacement)


def _count_argument(kind: str, argument: str, line: int) -> int:
    if not argument.isdigit() or int(argument) < 1:
        raise _fail(line, f"{kind} needs a whole number of tags of 1 or more, got {argument!r}")
    return int(argument)


def _tags_argument(kind: str, argument: str, line: int) -> list[Tag]:
    tags = split_tags(argument)
    if not tags:
        raise _fail(line, f"{kind} needs one or more comma-separated tags")
    return tags


def _sort_order(argument: str, line: int) -> str:
    if argument.lower() not in SORT_ORDERS:
        raise _fail(line, f"sort takes {' or '.join(SORT_ORDERS)}, got {argument!r}")
    return argument.lower()


RULE_PARSERS: dict[str, Callable[[str, int], Rule]] = {
    "remove": lambda arg, line: Remove(frozenset(tag.name for tag in _tags_argument("remove", arg, line))),
    "replace": _replace_rule,
    "regex": _regex_rule,
    "prepend": lambda arg, line: Place(tuple(_tags_argument("prepend", arg, line)), first=True),
    "append": lambda arg, line: Place(tuple(_tags_argument("append", arg, line)), first=False),
    "keep_first": lambda arg, line: KeepFirst(_count_argument("keep_first", arg, line)),
    "dedupe": lambda arg, line: Dedupe(),
    "sort": lambda arg, line: Sort(_sort_order(arg, line)),
}
NO_ARGUMENT = {"dedupe"}


def parse_rule(text: str, line: int) -> Rule:
    """One rule line (not blank, not a comment); InputError for 'rules' naming the line."""
    name, colon, argument = text.partition(":")
    if not colon:  # "sort alpha": name the rule, then say what is missing
        name, _, argument = text.partition(" ")
    kind, argument = name.strip().lower(), argument.strip()
    if kind == "shuffle_keep":
        raise _fail(line, "shuffle_keep is not a rule: how many leading tags stay in place when tags are "
                          "shuffled or dropped is the trainer's keep_tokens setting (a prepended trigger word "
                          "with keep_tokens 1 stays first)")
    if kind not in RULE_PARSERS:
        raise _fail(line, f"unknown rule {kind!r}: use one of {', '.join(RULE_PARSERS)}")
    if kind in NO_ARGUMENT and argument:
        raise _fail(line, f"{kind} takes nothing after it, got {argument!r}")
    if kind not in NO_ARGUMENT and not colon:
        raise _fail(line, f"{kind} needs ':' and its argument, e.g. {kind}: ...")
    return RULE_PARSERS[kind](argument, line)


def parse_rules(text: str) -> list[Rule]:
    """Every rule of `text`, in order (comment and blank lines skipped)."""
    rules = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            rules.append(parse_rule(stripped, number))
    return rules


def apply_rules(captions: Sequence[str], rules: Sequence[Rule]) -> EditResult:
    """`rules` applied in order to every caption."""
    original = [split_tags(caption) for caption in captions]
    edited: TagLists = [list(tags) for tags in original]
    summary = []
    for rule in rules:
        edited, line = rule.apply(edited)
        summary.append(line)
    result = EditResult([caption if tags == before else join_tags(tags)
                         for caption, before, tags in zip(captions, original, edited)], summary)
    emptied = [index + 1 for index, (before, tags) in enumerate(zip(original, edited)) if before and not tags]
    if emptied:
        shown = ", ".join(map(str, emptied[:10])) + (", ..." if len(emptied) > 10 else "")
        result.warnings.append(f"{len(emptied)} caption(s) have no tags left after the rules (kept, empty): "
                               f"caption {shown}")
    return result


def edit_captions(captions: Sequence[str], rules_text: str) -> EditResult:
    """Parse `rules_text` and apply it to `captions`."""
    return apply_rules(captions, parse_rules(rules_text))
