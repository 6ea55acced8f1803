"""The labelled grid: cells where the layout says, margins sized to the labels' text, labels drawn."""
import pytest
import torch

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.image_grid import (
    LABEL_PADDING,
    ROW_LABEL_MAX_CELLS,
    block_size,
    default_font_size,
    grid_layout,
    label_font,
    labelled_grid,
    wrap_label,
)


def _cell(value, height=40, width=60):
    return torch.full((1, height, width, 3), value)


def _crop(image, box):
    x0, y0, x1, y1 = box
    return image[:, y0:y1, x0:x1]


def test_cells_sit_where_the_layout_says_and_keep_their_pixels():
    cells = [[_cell(0.2), _cell(0.4), _cell(0.6)], [_cell(0.0), _cell(1.0), _cell(0.8)]]
    rows, columns = ["first row", "second row"], ["a", "b", "c"]
    grid = labelled_grid(cells, rows, columns)
    layout = grid_layout(rows, columns, 60, 40)
    assert grid.shape == (1, layout.height, layout.width, 3)
    assert (layout.rows, layout.columns) == (2, 3)
    assert layout.width == layout.left + 3 * 60 and layout.height == layout.top + 2 * 40
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            torch.testing.assert_close(_crop(grid, layout.cell_box(r, c)), cell, rtol=0, atol=0.5 / 255)


def test_margins_are_sized_to_the_labels():
    font = label_font(default_font_size(60, 40))
    short, long = grid_layout(["a"], ["x"], 60, 40), grid_layout(["a wider label"], ["x"], 60, 40)
    widest = max(font.getlength(line) for line in wrap_label("a wider label", font, 60))
    assert long.left >= widest + 2 * LABEL_PADDING and long.left > short.left
    ascent, descent = font.getmetrics()
    assert short.top >= ascent + descent + 2 * LABEL_PADDING
    two_lines = grid_layout(["a"], ["several words that wrap"], 60, 40)
    assert two_lines.top > short.top, "a column label wider than its cell wraps onto more lines"
    assert grid_layout(["", ""], ["", ""], 60, 40).left == 0 == grid_layout(["", ""], ["", ""], 60, 40).top


def test_labels_wrap_between_words_to_the_cell_width():
    font = label_font(12)
    lines = wrap_label("a cat sitting on a very long sofa in the sun", font, 80)
    assert len(lines) > 1 and " ".join(lines) == "a cat sitting on a very long sofa in the sun"
    assert all(font.getlength(line) <= 80 for line in lines)
    assert wrap_label("unbreakableword", font, 10) == ["unbreakableword"]


def test_labels_are_drawn_in_the_margins():
    cells = [[_cell(1.0)], [_cell(1.0)]]
    plain = labelled_grid(cells, ["", ""], [""])
    assert float(plain.min()) == 1.0, "white cells and no label: nothing dark anywhere"
    grid = labelled_grid(cells, ["cat", "dog"], ["seed 1"])
    layout = grid_layout(["cat", "dog"], ["seed 1"], 60, 40)
    row_margin = grid[:, layout.top:, :layout.left]
    column_margin = grid[:, :layout.top, layout.left:]
    for margin in (row_margin[:, :40], row_margin[:, 40:], column_margin):
        assert float(margin.min()) < 0.3, "dark text in each label's place"
    other = labelled_grid(cells, ["cow", "dog"], ["seed 1"])
    assert not torch.equal(grid[:, layout.top:layout.top + 40], other[:, layout.top:layout.top + 40])


def test_the_grid_refuses_mismatched_cells_and_labels():
    with pytest.raises(InputError, match="label per row"):
        labelled_grid([[_cell(0.5)]], ["a", "b"], ["x"])
    with pytest.raises(InputError, match="60x40"):
        labelled_grid([[_cell(0.5), _cell(0.5, height=30)]], ["a"], ["x", "y"])


def test_a_row_label_taller_than_its_row_wraps_wider_instead():
    label = "my-hypernet-1_2_1-swish-best (step 1500)\nstrength 0.5\nval loss 0.098765 (best)"
    font = label_font(default_font_size(64, 64))
    assert block_size(wrap_label(label, font, 64), font)[1] > 64, "at a cell's width it would overlap the next row"
    layout = grid_layout([label, label], ["seed 1"], 64, 64)
    assert 64 < layout.row_label_width <= ROW_LABEL_MAX_CELLS * 64
    lines = wrap_label(label, font, layout.row_label_width)
    assert block_size(lines, font)[1] <= 64
    assert layout.left == block_size(lines, font)[0] + 2 * LABEL_PADDING
    assert grid_layout(["a wider label"], ["x"], 60, 40).row_label_width == 60, "short labels keep a cell's width"
