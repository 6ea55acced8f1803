"""Choosing pictures by their tags: an expression over tag names, and a split of a dataset's
parallel lists into the pictures it keeps and those it drops.

    NOT (text OR watermark OR signature)
    1girl AND (long hair OR "black and white") AND NOT monochrome

- AND, OR and NOT are keywords in any case; NOT binds tighter than AND, AND tighter than OR;
  parentheses group. An empty expression keeps every picture.
- A tag name is the words between keywords and brackets, spaces collapsed (`long hair`); names
  are compared as tag_syntax.py reads captions (weights ignored, case kept). Escaped brackets
  belong to the name (`hat \\(object\\)`); a name holding a keyword or a bracket can be quoted
  ("black and white").
- A name no caption holds matches nothing (so `NOT name` keeps every picture).
- Positions in error messages count characters from 1."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import InputError
from .lists import DatasetLists
from .tag_syntax import collapse_spaces, tag_names

INPUT_NAME = "expression"
KEYWORDS = ("AND", "OR", "NOT")
_PUNCTUATION = '()",'
Tree = Optional[tuple]  # ("name", str) | ("not", Tree) | ("and"|"or", Tree, Tree); None = keep all


@dataclass(frozen=True)
class Token:
    kind: str  # "word" (a plain name), "quoted" (a name in quotes), "(", ")", "AND", "OR", "NOT"
    text: str
    position: int  # 1-based


def _fail(message: str, position: int) -> InputError:
    return InputError(INPUT_NAME, f"{message} at position {position}")


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The name inside the quote that opens at `start`, and the index after its closing quote."""
    end = text.find('"', start + 1)
    if end < 0:
        raise _fail("a quote is never closed: it opens", start + 1)
    return collapse_spaces(text[start + 1:end]), end + 1


def _word(text: str, start: int) -> tuple[str, int]:
    """A word (escaped characters included) from `start`, and the index after it."""
    index = start
    while index < len(text) and not text[index].isspace() and text[index] not in _PUNCTUATION:
        index += 2 if text[index] == "\\" else 1
    return text[start:index], min(index, len(text))


def tokenize(text: str) -> list[Token]:
    """The expression's tokens; consecutive plain words form one name."""
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
        elif char in "()":
            tokens.append(Token(char, char, index + 1))
            index += 1
        elif char == ",":
            raise _fail("',' is not part of an expression: join tags with OR or AND", index + 1)
        elif char == '"':
            name, end = _quoted(text, index)
            tokens.append(Token("quoted", name, index + 1))
            index = end
        else:
            word, end = _word(text, index)
            keyword = word.upper() if word.upper() in KEYWORDS else None
            if keyword:
                tokens.append(Token(keyword, word, index + 1))
            elif tokens and tokens[-1].kind == "word":
                last = tokens.pop()
                tokens.append(Token("word", f"{last.text} {word}", last.position))
            else:
                tokens.append(Token("word", word, index + 1))
            index = end
    return tokens


class _Parser:
    """Recursive descent over the tokens: or := and (OR and)*; and := not (AND not)*;
    not := NOT not | atom; atom := name | ( or )."""

    def __init__(self, tokens: list[Token], end_position: int):
        self.tokens, self.index, self.end_position = tokens, 0, end_position

    def peek(self) -> Optional[Token]:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def parse(self) -> Tree:
        tree = self.either()
        extra = self.peek()
        if extra is not None:
            hint = " (join with AND or OR)" if extra.kind in ("word", "quoted", "(") else ""
            raise _fail(f"unexpected {extra.text!r}{hint}", extra.position)
        return tree

    def either(self) -> Tree:
        tree = self.both()
        while (token := self.peek()) is not None and token.kind == "OR":
            self.take()
            tree = ("or", tree, self.both())
        return tree

    def both(self) -> Tree:
        tree = self.negated()
        while (token := self.peek()) is not None and token.kind == "AND":
            self.take()
            tree = ("and", tree, self.negated())
        return tree

    def negated(self) -> Tree:
        token = self.peek()
        if token is not None and token.kind == "NOT":
            self.take()
            return ("not", self.negated())
        return self.atom()

    def atom(self) -> Tree:
        token = self.peek()
        if token is None:
            raise _fail("expected a tag name, NOT or '(' but the expression ends", self.end_position)
        if token.kind in ("word", "quoted"):
            return ("name", self.take().text)
        if token.kind != "(":
            raise _fail(f"expected a tag name, NOT or '(' but found {token.text!r}", token.position)
        self.take()
        tree = self.either()
        closing = self.peek()
        if closing is None or closing.kind != ")":
            raise _fail("'(' is never closed: it opens", token.position)
        self.take()
        return tree


@dataclass(frozen=True)
class TagExpression:
    """A parsed expression; `tree` None keeps every picture."""

    text: str
    tree: Tree

    def matches(self, names: set) -> bool:
        """Whether a caption holding the tag `names` is kept."""
        return self.tree is None or _evaluate(self.tree, names)

    def names(self) -> set:
        """Every tag name the expression mentions."""
        return _mentioned(self.tree)


def _evaluate(tree: tuple, names: set) -> bool:
    kind = tree[0]
    if kind == "name":
        return tree[1] in names
    if kind == "not":
        return not _evaluate(tree[1], names)
    if kind == "and":
        return _evaluate(tree[1], names) and _evaluate(tree[2], names)
    return _evaluate(tree[1], names) or _evaluate(tree[2], names)


def _mentioned(tree: Tree) -> set:
    if tree is None:
        return set()
    if tree[0] == "name":
        return {tree[1]}
    return set().union(*(_mentioned(branch) for branch in tree[1:]))


def parse_expression(text: str) -> TagExpression:
    """The expression in `text`; InputError for 'expression' with the position of a mistake."""
    tokens = tokenize(text)
    return TagExpression(text, _Parser(tokens, len(text.rstrip()) + 1).parse() if tokens else None)


def unknown_names(expression: TagExpression, captions: Sequence[str]) -> list[str]:
    """The names the expression mentions that no caption holds (they match nothing), sorted."""
    present = {name for caption in captions for name in tag_names(caption)}
    return sorted(expression.names() - present)


def split_by_tags(lists: DatasetLists, expression: TagExpression) -> tuple[DatasetLists, DatasetLists]:
    """The pictures whose caption matches (kept) and the others (dropped), every list in step."""
    count = len(lists.images)
    for name in ("masks", "captions", "stems"):
        if len(getattr(lists, name)) != count:
            raise InputError(name, f"has {len(getattr(lists, name))} items for {count} images")
    kept, dropped = DatasetLists(), DatasetLists()
    for image, mask, caption, stem in zip(lists.images, lists.masks, lists.captions, lists.stems):
        target = kept if expression.matches(set(tag_names(caption))) else dropped
        target.add(image, mask, caption, stem)
    return kept, dropped
