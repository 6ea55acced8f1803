"""A labelled grid of pictures: rows x columns of equal-size cells, a label left of each row and
above each column, as in A1111's X/Y grids. The training previews (prompt x seed) use it, and any
other comparison grid can.

Labels are drawn with matplotlib's DejaVu Sans (a TrueType font every install of matplotlib ships),
not Pillow's bitmap default, which has one tiny size and no accents. Label lines wrap at word
boundaries to the width of a cell, and the margins are computed from the text's measured size, so
nothing is cut off and no label overlaps a picture. A row label taller than its row (several lines
beside small cells) wraps wider instead, up to ROW_LABEL_MAX_CELLS cells, so that it does not run
into the next row's label."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError
from .images import image_tensor_to_pil, pil_to_image_tensor

LABEL_PADDING = 6  # pixels between a label and the edge of its margin or the pictures
LINE_SPACING = 2  # extra pixels between the lines of a wrapped label
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (20, 20, 20)
MIN_FONT_SIZE = 10
FONT_SHARE = 1 / 24  # the default font size is this share of a cell's shorter side
ROW_LABEL_MAX_CELLS = 4  # a row label too tall for its row may wrap up to this many cells wide


@lru_cache(maxsize=None)
def label_font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at `size` pixels, from matplotlib's own font folder."""
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def default_font_size(cell_width: int, cell_height: int) -> int:
    return max(MIN_FONT_SIZE, round(min(cell_width, cell_height) * FONT_SHARE))


def wrap_label(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels, broken between words (a word wider than that
    keeps its own line); its own line breaks are kept."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                candidate = word
            line = candidate
        lines.append(line)
    return lines


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes: the margins (left for the row labels, top for the column labels)
    and the cells right and below them, touching each other."""

    rows: int
    columns: int
    cell_width: int
    cell_height: int
    left: int
    top: int
    row_label_width: int = 0  # the width row labels wrap to (0: a cell's width)

    @property
    def width(self) -> int:
        return self.left + self.columns * self.cell_width

    @property
    def height(self) -> int:
        return self.top + self.rows * self.cell_height

    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of a cell, x1 and y1 exclusive."""
        x0, y0 = self.left + column * self.cell_width, self.top + row * self.cell_height
        return x0, y0, x0 + self.cell_width, y0 + self.cell_height


def block_size(lines: Sequence[str], font: ImageFont.FreeTypeFont) -> tuple[int, int]:
    """Width and height in pixels of lines drawn one under the other."""
    ascent, descent = font.getmetrics()
    width = max((font.getlength(line) for line in lines), default=0)
    return int(width + 0.999), len(lines) * (ascent + descent) + max(0, len(lines) - 1) * LINE_SPACING


def row_label_width(row_labels: Sequence[str], font: ImageFont.FreeTypeFont, cell_width: int,
                    cell_height: int) -> int:
    """The width row labels wrap to: a cell's, doubled while some label is taller than its row,
    up to ROW_LABEL_MAX_CELLS cells."""
    width = cell_width
    while width < ROW_LABEL_MAX_CELLS * cell_width and any(
            block_size(wrap_label(label, font, width), font)[1] > cell_height for label in row_labels):
        width = min(2 * width, ROW_LABEL_MAX_CELLS * cell_width)
    return width


def grid_layout(row_labels: Sequence[str], column_labels: Sequence[str], cell_width: int, cell_height: int,
                font_size: Optional[int] = None) -> GridLayout:
    """The layout for len(row_labels) x len(column_labels) cells of the given size; when every
    row (or column) label is empty, that margin is left out."""
    font = label_font(font_size or default_font_size(cell_width, cell_height))
    row_wrap = row_label_width(row_labels, font, cell_width, cell_height)
    row_blocks = [block_size(wrap_label(label, font, row_wrap), font) for label in row_labels]
    column_blocks = [block_size(wrap_label(label, font, cell_width), font) for label in column_labels]
    left = max((w for w, _ in row_blocks), default=0)
    top = max((h for _, h in column_blocks), default=0)
    return GridLayout(len(row_labels), len(column_labels), cell_width, cell_height,
                      left + 2 * LABEL_PADDING if any(row_labels) else 0,
                      top + 2 * LABEL_PADDING if any(column_labels) else 0, row_wrap)


def labelled_grid(cells: Sequence[Sequence[torch.Tensor]], row_labels: Sequence[str],
                  column_labels: Sequence[str], font_size: Optional[int] = None) -> torch.Tensor:
    """One IMAGE [1,H,W,3] of `cells` (a list of rows, each a list of IMAGE items [1,h,w,3] of one
    size) with a label left of each row and above each column."""
    if not cells or not cells[0]:
        raise InputError("images", "a grid needs at least one picture")
    if len(cells) != len(row_labels) or any(len(row) != len(column_labels) for row in cells):
        raise InputError("images", f"a grid of {len(cells)} rows x {len(cells[0])} columns needs one label per "
                                   f"row and column, got {len(row_labels)} and {len(column_labels)}")
    cell_height, cell_width = int(cells[0][0].shape[-3]), int(cells[0][0].shape[-2])
    if any(tuple(cell.shape[-3:-1]) != (cell_height, cell_width) for row in cells for cell in row):
        raise InputError("images", f"every picture of a grid must be {cell_width}x{cell_height} like the first")
    size = font_size or default_font_size(cell_width, cell_height)
    layout = grid_layout(row_labels, column_labels, cell_width, cell_height, size)
    canvas = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            canvas.paste(image_tensor_to_pil(cell), layout.cell_box(r, c)[:2])
    _draw_labels(ImageDraw.Draw(canvas), layout, row_labels, column_labels, label_font(size))
    return pil_to_image_tensor(canvas)


def _draw_labels(draw: ImageDraw.ImageDraw, layout: GridLayout, row_labels: Sequence[str],
                 column_labels: Sequence[str], font: ImageFont.FreeTypeFont) -> None:
    """Row labels right-aligned and centred on their row; column labels centred above their column."""
    for r, label in enumerate(row_labels):
        lines = wrap_label(label, font, layout.row_label_width or layout.cell_width)
        width, height = block_size(lines, font)
        _, y0, _, y1 = layout.cell_box(r, 0)
        draw.multiline_text((layout.left - LABEL_PADDING - width, max(0, (y0 + y1 - height) // 2)), "\n".join(lines),
                            font=font, fill=TEXT_COLOR, spacing=LINE_SPACING, align="right")
    for c, label in enumerate(column_labels):
        lines = wrap_label(label, font, layout.cell_width)
        width, height = block_size(lines, font)
        x0, _, x1, _ = layout.cell_box(0, c)
        draw.multiline_text(((x0 + x1 - width) // 2, layout.top - LABEL_PADDING - height), "\n".join(lines),
                            font=font, fill=TEXT_COLOR, spacing=LINE_SPACING, align="center")
