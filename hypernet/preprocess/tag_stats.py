"""Which tags a caption list uses: counts, share of pictures, tags per caption, and the warnings
worth acting on (tags in every caption, repeated tags, captions longer than one text-encoder
chunk), as a text table, CSV text and a bar chart.

Tags are read as tag_syntax.py defines them: a weighted tag counts as its bare name. A tag's
count is the number of captions that hold it (a tag written twice in one caption counts once
there); tags per caption count every tag as written, repeats included. Token counts use the CLIP
vocabulary that comes with the pack (SD1, SD2 and SDXL share it) on the words the text encoder
reads: emphasis brackets and weights removed, escaped brackets unescaped, tags joined by ", "."""
from __future__ import annotations

import csv
import functools
import io
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
import torch

from ..images import agg_figure, figure_image
from ..sd.headless_clip import TOKENS_PER_CHUNK
from .tag_syntax import Tag, encoder_text, split_tags

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

CHUNK_TOKENS = TOKENS_PER_CHUNK - 2  # the start and end tokens take two places of the 77
TOP_N_DEFAULT = 30
CSV_COLUMNS = ("tag", "count", "share")
_LABEL_CHARS = 40  # longer tag names are shortened on the chart (never in the table or CSV)


@dataclass
class TagStats:
    """Statistics of one caption list; `counts` is sorted by count (most first), then by name."""

    caption_count: int
    counts: list[tuple[str, int]] = field(default_factory=list)
    tags_per_caption: list[int] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)
    repeats: list[tuple[int, str]] = field(default_factory=list)  # (caption index, first repeated name)

    @property
    def distinct(self) -> int:
        return len(self.counts)

    def share(self, count: int) -> float:
        """The fraction of captions that `count` captions are."""
        return count / self.caption_count if self.caption_count else 0.0

    def in_every_caption(self) -> list[str]:
        """Tags every caption holds (only meaningful with two captions or more)."""
        if self.caption_count < 2:
            return []
        return [name for name, count in self.counts if count == self.caption_count]

    def long_captions(self) -> list[tuple[int, int]]:
        """(caption index, tokens) of the captions longer than one text-encoder chunk."""
        return [(index, tokens) for index, tokens in enumerate(self.token_counts) if tokens > CHUNK_TOKENS]


@functools.lru_cache(maxsize=1)
def bundled_tokenizer() -> "CLIPTokenizer":
    """The CLIP tokenizer built from the vocabulary that comes with the pack (built once)."""
    from ..sd.tokenizer import BUNDLED_BPE_FILE, tokenizer_from_bpe_file

    return tokenizer_from_bpe_file(BUNDLED_BPE_FILE)


def caption_token_counts(tag_lists: Sequence[Sequence[Tag]]) -> list[int]:
    """CLIP tokens of each caption as the text encoder reads it (no start/end tokens).

    The tokenizer never joins characters across a space, so a caption's count is the sum over
    its tags of the tokens of "tag," ("tag" for the last): each distinct piece is tokenized once."""
    pieces = [[encoder_text(tag) + ("," if index < len(tags) - 1 else "") for index, tag in enumerate(tags)]
              for tags in tag_lists]
    distinct = sorted({piece for caption in pieces for piece in caption})
    if not distinct:
        return [0] * len(pieces)
    ids = bundled_tokenizer()(distinct, add_special_tokens=False, verbose=False)["input_ids"]
    lengths = {piece: len(tokens) for piece, tokens in zip(distinct, ids)}
    return [sum(lengths[piece] for piece in caption) for caption in pieces]


def tag_statistics(captions: Sequence[str],
                   count_tokens: Optional[Callable[[list[list[Tag]]], list[int]]] = caption_token_counts) -> TagStats:
    """Statistics of `captions`; `count_tokens=None` skips the token counts."""
    tag_lists = [split_tags(caption) for caption in captions]
    pictures: Counter = Counter()
    repeats = []
    for index, tags in enumerate(tag_lists):
        names = [tag.name for tag in tags]
        pictures.update(set(names))
        repeated = next((name for position, name in enumerate(names) if name in names[:position]), None)
        if repeated is not None:
            repeats.append((index, repeated))
    return TagStats(caption_count=len(captions), counts=sorted(pictures.items(), key=lambda item: (-item[1], item[0])),
                    tags_per_caption=[len(tags) for tags in tag_lists],
                    token_counts=count_tokens(tag_lists) if count_tokens is not None else [], repeats=repeats)


def summary_line(stats: TagStats) -> str:
    """Captions, distinct tags and tags per caption (min / mean / max) in one line."""
    if not stats.caption_count:
        return "no captions"
    per_caption = stats.tags_per_caption
    return (f"{stats.caption_count} captions, {stats.distinct} distinct tags; tags per caption: "
            f"min {min(per_caption)} / mean {np.mean(per_caption):.1f} / max {max(per_caption)}")


def stats_table(stats: TagStats, top_n: int = TOP_N_DEFAULT) -> str:
    """The summary line and the `top_n` most frequent tags with count and share of pictures."""
    lines = [summary_line(stats), "", f"{'count':>6}  {'share':>6}  tag"]
    lines += [f"{count:>6}  {stats.share(count):>6.1%}  {name}" for name, count in stats.counts[:top_n]]
    if stats.distinct > top_n:
        lines.append(f"... and {stats.distinct - top_n} more (the CSV lists every tag)")
    return "\n".join(lines)


def stats_warnings(stats: TagStats) -> list[str]:
    """What is worth fixing before training, one line each."""
    warnings = []
    every = stats.in_every_caption()
    if every:
        warnings.append(f"in every caption: {', '.join(every)} (a tag that every picture has cannot tell them "
                        "apart; keep it only as a trigger word)")
    long = stats.long_captions()
    if long:
        index, tokens = max(long, key=lambda item: item[1])
        warnings.append(f"{len(long)} caption(s) longer than the text encoder's {CHUNK_TOKENS}-token chunk (longest: "
                        f"caption {index + 1}, {tokens} tokens; the prompt template adds more): tags past the chunk "
                        "are cut or encoded apart; the keep_first or remove rules shorten them")
    if stats.repeats:
        index, name = stats.repeats[0]
        warnings.append(f"{len(stats.repeats)} caption(s) hold a tag twice (e.g. caption {index + 1}: {name}); "
                        "the dedupe rule removes repeats")
    empty = [index for index, count in enumerate(stats.tags_per_caption) if count == 0]
    if empty:
        warnings.append(f"{len(empty)} caption(s) have no tags (e.g. caption {empty[0] + 1})")
    return warnings


def stats_csv_rows(stats: TagStats) -> list[tuple[str, int, float]]:
    """Every tag as (tag, count, share of pictures), most frequent first."""
    return [(name, count, round(stats.share(count), 4)) for name, count in stats.counts]


def stats_csv(stats: TagStats) -> str:
    """The CSV text: a header row, then stats_csv_rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(stats_csv_rows(stats))
    return buffer.getvalue()


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[:_LABEL_CHARS - 1] + "\u2026"


def tag_chart(stats: TagStats, top_n: int = TOP_N_DEFAULT, width: int = 800) -> torch.Tensor:
    """A horizontal bar chart of the `top_n` most frequent tags as an IMAGE [1,H,W,3] (float 0..1)."""
    from matplotlib.ticker import MaxNLocator

    shown = stats.counts[:top_n]
    height = max(200, 24 * len(shown) + 110)
    figure = agg_figure(width, height)
    axes = figure.add_subplot()
    if shown:
        positions = np.arange(len(shown))
        bars = axes.barh(positions, [count for _, count in shown], color="#1f5fbf")
        axes.set_yticks(positions, [_short(name) for name, _ in shown], fontsize=9)
        axes.invert_yaxis()  # the most frequent tag at the top
        axes.bar_label(bars, [f"{stats.share(count):.0%}" for _, count in shown], padding=3, fontsize=8)
        axes.set_xlim(0, max(count for _, count in shown) * 1.12)
    else:
        axes.text(0.5, 0.5, "no tags", ha="center", va="center", transform=axes.transAxes)
        axes.set_yticks([])
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts are whole numbers
    axes.set_xlabel("pictures with the tag")
    axes.set_title(f"top {len(shown)} of {stats.distinct} tags in {stats.caption_count} captions")
    axes.grid(True, axis="x", alpha=0.3)
    # Margins from the longest label, not tight_layout(): measuring every text costs a third of the time.
    longest = max((len(_short(name)) for name, _ in shown), default=0)
    figure.subplots_adjust(left=min(0.5, (longest * 7 + 24) / width), right=0.96, top=1 - 36 / height,
                           bottom=48 / height)
    return figure_image(figure)
