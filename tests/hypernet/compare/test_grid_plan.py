"""The grid's plan: cells, geometry and label text from the inputs; the inputs' parsing; the pixel
budget."""
import pytest
import torch

from hypernet_studio.hypernet.compare.grid_plan import (
    MAX_GRID_PIXELS,
    NOT_SAMPLED_GREY,
    check_pixel_budget,
    column_label,
    line_count,
    parse_prompts,
    parse_seeds,
    parse_strengths,
    plan_grid,
    render_grid,
)
from hypernet_studio.hypernet.compare.run_records import NetworkRecord
from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.image_grid import grid_layout

CAT_500 = NetworkRecord("cat-500", step=500, val_loss=0.123456, is_best=False)
CAT_BEST = NetworkRecord("cat-best", step=1000, val_loss=0.0875, is_best=True)


def test_strengths_parse_with_commas_or_spaces_each_once():
    assert parse_strengths("0, 0.5, 1") == [0.0, 0.5, 1.0]
    assert parse_strengths(" 1 0.5,,-0 1e-1, 1") == [1.0, 0.5, 0.0, 0.1]


@pytest.mark.parametrize("text,quoted", [("0, abc", "'abc'"), ("nan", "'nan'"), ("1, inf", "'inf'"),
                                         ("10.5", "'10.5'"), ("0.5, -11", "'-11'")])
def test_a_bad_strength_is_refused_naming_the_input_and_the_value(text, quoted):
    with pytest.raises(InputError) as caught:
        parse_strengths(text)
    assert caught.value.input_name == "strengths" and quoted in caught.value.message


def test_no_strength_is_refused_under_the_callers_input_name():
    with pytest.raises(InputError) as caught:
        parse_strengths(" , ", input_name="strength_list")
    assert caught.value.input_name == "strength_list" and "is empty" in caught.value.message


def test_seeds_parse_as_whole_numbers_each_once():
    assert parse_seeds("1, 2 3,1") == [1, 2, 3]
    assert parse_seeds(str(2**64 - 1)) == [2**64 - 1]


@pytest.mark.parametrize("text", ["", "-1", "1.5", "x", str(2**64)])
def test_bad_seeds_are_refused(text):
    with pytest.raises(InputError) as caught:
        parse_seeds(text)
    assert caught.value.input_name == "seeds"


def test_prompts_are_lines_without_the_blank_ones():
    assert parse_prompts("a cat\n\n   \n  a dog on a hill  \r\n") == ["a cat", "a dog on a hill"]
    with pytest.raises(InputError) as caught:
        parse_prompts(" \n\n")
    assert caught.value.input_name == "prompts"


def test_a_grid_within_the_budget_passes_and_one_over_it_says_its_size():
    check_pixel_budget(10, 12, 512, 512)
    with pytest.raises(InputError) as caught:
        check_pixel_budget(100, 10, 512, 512, input_name="seeds")
    assert caught.value.input_name == "seeds"
    assert "100 rows x 10 columns of 512x512" in caught.value.message
    assert "5120x51200 pixels (262.1 megapixels)" in caught.value.message
    assert f"{MAX_GRID_PIXELS / 1e6:g}" in caught.value.message


def test_the_budget_counts_the_pictures_exactly():
    side = int(MAX_GRID_PIXELS ** 0.5)
    assert side * side <= MAX_GRID_PIXELS < (side + 1) * (side + 1)
    check_pixel_budget(1, 1, side, side)
    with pytest.raises(InputError):
        check_pixel_budget(1, 1, side + 1, side + 1)


def test_rows_are_lines_columns_prompt_by_seed_cells_in_sampling_order():
    plan = plan_grid([CAT_500, CAT_BEST], [0.0, 0.5, 1.0], ["a cat", "a dog"], [7, 8])
    assert (plan.rows, plan.columns, len(plan.cells)) == (5, 4, 20)
    assert plan.lines() == [(None, 0.0), (0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0)]
    assert line_count(2, [0.0, 0.5, 1.0]) == 5
    first_line = [(c.network_index, c.strength, c.prompt_index, c.seed, c.row, c.column) for c in plan.cells[:4]]
    assert first_line == [(None, 0.0, 0, 7, 0, 0), (None, 0.0, 0, 8, 0, 1), (None, 0.0, 1, 7, 0, 2),
                          (None, 0.0, 1, 8, 0, 3)]
    last = plan.cells[-1]
    assert (last.network_index, last.strength, last.prompt_index, last.seed, last.row, last.column) == (1, 1.0, 1, 8,
                                                                                                       4, 3)
    assert sorted((c.row, c.column) for c in plan.cells) == [(r, c) for r in range(5) for c in range(4)]


def test_transposed_the_lines_are_columns():
    plain = plan_grid([CAT_500], [0.5, 1.0], ["a cat"], [1, 2, 3])
    turned = plan_grid([CAT_500], [0.5, 1.0], ["a cat"], [1, 2, 3], transpose=True)
    assert (turned.rows, turned.columns) == (plain.columns, plain.rows) == (3, 2)
    assert (turned.row_labels, turned.column_labels) == (plain.column_labels, plain.row_labels)
    assert [(c.row, c.column) for c in turned.cells] == [(c.column, c.row) for c in plain.cells]


def test_row_labels_say_file_step_strength_loss_and_best():
    plan = plan_grid([CAT_500, CAT_BEST, NetworkRecord("style"), NetworkRecord("sweep", is_best=True)], [0, 1.5],
                     ["p"], [1])
    assert plan.row_labels == ["no hypernetwork",
                               "cat-500\nstrength 1.5\nval loss 0.12346",
                               "cat-best (step 1000)\nstrength 1.5\nval loss 0.0875 (best)",
                               "style\nstrength 1.5",
                               "sweep\nstrength 1.5\nbest"]


def test_column_labels_shorten_the_prompt_and_say_the_seed():
    long = "masterpiece,   best quality, " + "a very long prompt " * 10
    label = column_label(long, 42)
    prompt_line, seed_line = label.split("\n")
    assert seed_line == "seed 42"
    assert len(prompt_line) == 60 and prompt_line.endswith("\u2026")
    assert prompt_line.startswith("masterpiece, best quality, a very long")
    assert column_label("a cat", 3) == "a cat\nseed 3"


def test_without_networks_or_a_zero_strength_there_is_nothing_to_compare():
    with pytest.raises(InputError) as caught:
        plan_grid([], [0.5, 1.0], ["p"], [1])
    assert caught.value.input_name == "hypernetworks"
    assert plan_grid([], [0.0], ["p"], [1]).row_labels == ["no hypernetwork"]


def _picture(value, width=48, height=32):
    return torch.full((1, height, width, 3), value)


def test_the_grid_is_rows_by_columns_of_cells_plus_the_label_margins():
    plan = plan_grid([CAT_500, CAT_BEST], [0.0, 1.0], ["a cat", "a dog"], [7])
    pictures = [_picture(i * 40 / 255) for i in range(len(plan.cells))]  # 8-bit values: exact in a picture
    grid = render_grid(plan, pictures)
    layout = grid_layout(plan.row_labels, plan.column_labels, 48, 32)
    assert layout.left > 0 and layout.top > 0
    assert grid.shape == (1, layout.top + 3 * 32, layout.left + 2 * 48, 3)
    for cell, picture in zip(plan.cells, pictures):
        x0, y0, x1, y1 = layout.cell_box(cell.row, cell.column)
        torch.testing.assert_close(grid[:, y0:y1, x0:x1], picture, rtol=0, atol=0.5 / 255)


def test_cells_not_sampled_are_grey_and_an_empty_grid_is_refused():
    plan = plan_grid([CAT_500], [1.0], ["a cat"], [1, 2])
    grid = render_grid(plan, [_picture(1.0), None])
    x0, y0, x1, y1 = grid_layout(plan.row_labels, plan.column_labels, 48, 32).cell_box(0, 1)
    torch.testing.assert_close(grid[:, y0:y1, x0:x1], _picture(NOT_SAMPLED_GREY), rtol=0, atol=1 / 255)
    with pytest.raises(InputError) as caught:
        render_grid(plan, [None, None])
    assert caught.value.input_name == "images"
