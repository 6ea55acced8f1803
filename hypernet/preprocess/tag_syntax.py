"""A caption as a list of tags: the grammar that tag statistics, tag rules and tag filters share.

A caption is split at every comma (as the trainer's tag shuffle splits it); each tag is trimmed,
runs of spaces inside it collapse to one, and empty tags are dropped. A tag's *name* is what is
compared and counted:
- prompt emphasis around the whole tag is not part of the name (ComfyUI's syntax, which the text
  encoder reads): `(tag:1.2)`, `(tag)` and `((tag))` are all named `tag`, and keep their brackets
  and weight when a rule renames them;
- escaped brackets are part of the name: `hat \\(object\\)` is named `hat \\(object\\)`;
- square brackets mean nothing to ComfyUI, so `[tag]` is named `[tag]`;
- names are compared exactly (case included), as written after the steps above."""
from __future__ import annotations

import functools
import re
from typing import Iterable, NamedTuple, Sequence

SEPARATOR = ", "
# The number at the end of an emphasis group, "(name:1.2)": the part after the last colon.
_WEIGHT = re.compile(r"^(?P<name>.*?)\s*:\s*(?P<weight>[-+]?(?:\d+(?:\.\d*)?|\.\d+))$", re.S)


class Tag(NamedTuple):
    """One tag: its name and the emphasis written around it ("(" and ":1.2)" for "(name:1.2)").
    A tuple, so that the many tags of a caption list are cheap to make and compare."""

    name: str
    opening: str = ""
    closing: str = ""

    @property
    def text(self) -> str:
        """The tag as written in a caption."""
        return f"{self.opening}{self.name}{self.closing}"

    def renamed(self, name: str) -> "Tag":
        """The same emphasis around another name."""
        return self._replace(name=name)


def collapse_spaces(text: str) -> str:
    """Trimmed, with every run of whitespace inside turned into one space."""
    return " ".join(text.split())


def _group_spans_whole(text: str) -> bool:
    """True when `text` is one bracket group: its first "(" closes at its last character."""
    depth, index = 0, 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        depth += (char == "(") - (char == ")")
        if depth == 0:
            return index == len(text) - 1
        index += 1
    return False


@functools.lru_cache(maxsize=65536)  # a caption list repeats the same tags many times
def parse_tag(written: str) -> Tag:
    """The Tag that `written` (one comma-free piece of a caption) holds."""
    name, opening, closing = collapse_spaces(written), "", ""
    while len(name) > 2 and name[0] == "(" and _group_spans_whole(name):
        inner, layer_close = name[1:-1].strip(), ")"
        weighted = _WEIGHT.match(inner)
        if weighted and weighted.group("name"):
            inner, layer_close = weighted.group("name"), f":{weighted.group('weight')})"
        if not inner:
            break
        name, opening, closing = inner, opening + "(", layer_close + closing
    return Tag(name, opening, closing)


def split_tags(caption: str) -> list[Tag]:
    """The caption's tags in order (empty pieces between commas are dropped)."""
    return [parse_tag(piece) for piece in caption.split(",") if piece.strip()]


def join_tags(tags: Iterable[Tag]) -> str:
    """Tags written back as one caption, separated by ", "."""
    return SEPARATOR.join(tag.text for tag in tags)


def tag_names(caption: str) -> list[str]:
    """The names of the caption's tags, in order (repeats kept)."""
    return [tag.name for tag in split_tags(caption)]


def encoder_text(tag: Tag) -> str:
    """The words the text encoder reads for `tag`: its name with escaped brackets unescaped."""
    return tag.name.replace("\\(", "(").replace("\\)", ")")


def names_in_captions(captions: Sequence[str]) -> set[str]:
    """Every tag name that occurs in any of `captions`."""
    return {name for caption in captions for name in tag_names(caption)}
