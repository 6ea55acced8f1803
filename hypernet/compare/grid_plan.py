"""The comparison grid's plan, before any sampling: which picture goes in which cell, the labels,
the parsing of the inputs that span it, and the pixel budget that refuses a grid too big to draw.

A line is one network at one strength. Rows are the lines and columns are prompt x seed, or the
other way round when transposed. Strength 0 is the base model whatever the network, so a 0 among
the strengths is one "no hypernetwork" line, first, not one identical line per network. Cells
are listed in sampling order, line by line, so a network is patched in once per strength."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..errors import InputError
from ..image_grid import labelled_grid
from ..input_values import seed_list
from ..patch import MAX_STRENGTH, MIN_STRENGTH
from .run_records import NetworkRecord

MAX_GRID_PIXELS = 64_000_000  # under Pillow's 89-megapixel limit for opening a picture again
COLUMN_PROMPT_CHARS = 60  # a column label shows this much of its prompt (wrapped to the cell's width)
NOT_SAMPLED_GREY = 0.5  # a cell an interrupt left without a picture
BASE_MODEL_LABEL = "no hypernetwork"


def _numbers(text: str) -> list[str]:
    return [part for part in re.split(r"[,\s]+", (text or "").strip()) if part]


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def parse_strengths(text: str, input_name: str = "strengths") -> list[float]:
    """The strengths of "0, 0.5, 1" (commas or spaces), each once, in the order given."""
    parts = _numbers(text)
    if not parts:
        raise InputError(input_name, "is empty: give one or more strengths, e.g. '0, 0.5, 1' (0 = no hypernetwork)")
    strengths = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise InputError(input_name, f"{part!r} is not a number: give strengths like '0, 0.5, 1'") from None
        if not math.isfinite(value) or not MIN_STRENGTH <= value <= MAX_STRENGTH:
            raise InputError(input_name, f"{part!r}: a strength goes from {MIN_STRENGTH:g} to {MAX_STRENGTH:g}")
        strengths.append(value + 0.0)  # -0.0 is strength 0 too
    return _unique(strengths)


def parse_seeds(text: str, input_name: str = "seeds") -> list[int]:
    """The seeds of "1, 2, 3" (commas or spaces), each once, in the order given."""
    seeds = seed_list(text, input_name)
    if not seeds:
        raise InputError(input_name, "is empty: give one or more seeds, e.g. '1, 2, 3'")
    return _unique(seeds)


def parse_prompts(text: str, input_name: str = "prompts") -> list[str]:
    """One prompt per line; blank lines are ignored."""
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise InputError(input_name, "is empty: give one prompt per line")
    return prompts


def check_pixel_budget(rows: int, columns: int, width: int, height: int, input_name: str = "width") -> None:
    """Refuse a grid whose pictures alone (labels come on top) exceed MAX_GRID_PIXELS."""
    grid_width, grid_height = columns * width, rows * height
    if grid_width * grid_height > MAX_GRID_PIXELS:
        raise InputError(input_name, f"a grid of {rows} rows x {columns} columns of {width}x{height} pictures "
                                     f"would be {grid_width}x{grid_height} pixels "
                                     f"({grid_width * grid_height / 1e6:.1f} megapixels) before its labels; "
                                     f"the most is {MAX_GRID_PIXELS / 1e6:g}: compare fewer networks, strengths, "
                                     "prompts or seeds, or make the pictures smaller")


@dataclass(frozen=True)
class GridCell:
    """One picture: which network (None: the base model) at which strength, with which prompt and
    seed, and where it goes."""

    network_index: Optional[int]
    strength: float
    prompt_index: int
    seed: int
    row: int
    column: int


@dataclass(frozen=True)
class GridPlan:
    """The cells in sampling order and the labels of the rows and columns."""

    cells: list[GridCell]
    row_labels: list[str]
    column_labels: list[str]

    @property
    def rows(self) -> int:
        return len(self.row_labels)

    @property
    def columns(self) -> int:
        return len(self.column_labels)

    def lines(self) -> list[tuple[Optional[int], float]]:
        """The (network index, strength) lines in sampling order."""
        return _unique([(cell.network_index, cell.strength) for cell in self.cells])


def grid_lines(network_count: int, strengths: Sequence[float]) -> list[tuple[Optional[int], float]]:
    """(network index, strength) per line: the base model once if 0 is a strength, then each
    network at each other strength."""
    every = _unique([float(strength) + 0.0 for strength in strengths])
    others = [strength for strength in every if strength != 0]
    base: list[tuple[Optional[int], float]] = [(None, 0.0)] if len(others) < len(every) else []
    return base + [(index, strength) for index in range(network_count) for strength in others]


def line_count(network_count: int, strengths: Sequence[float]) -> int:
    """How many lines (rows, untransposed) `network_count` networks at `strengths` make."""
    return len(grid_lines(network_count, strengths))


def format_loss(value: float) -> str:
    return f"{value:.5g}"


def line_label(network: Optional[NetworkRecord], strength: float) -> str:
    """A line's label: the file (and its step when the name does not say it), the strength, the
    validation loss when the run recorded one, and "best" on the run's best."""
    if network is None:
        return BASE_MODEL_LABEL
    name = network.name
    if network.step is not None and not name.endswith(f"-{network.step}"):
        name += f" (step {network.step})"
    lines = [name, f"strength {strength:g}"]
    if network.val_loss is not None:
        lines.append(f"val loss {format_loss(network.val_loss)}" + (" (best)" if network.is_best else ""))
    elif network.is_best:
        lines.append("best")
    return "\n".join(lines)


def column_label(prompt: str, seed: int) -> str:
    """A prompt x seed label: the prompt cut to COLUMN_PROMPT_CHARS with an ellipsis, and the seed."""
    text = " ".join(prompt.split())
    if len(text) > COLUMN_PROMPT_CHARS:
        text = text[:COLUMN_PROMPT_CHARS - 1].rstrip() + "\u2026"
    return f"{text}\nseed {seed}"


def plan_grid(networks: Sequence[NetworkRecord], strengths: Sequence[float], prompts: Sequence[str],
              seeds: Sequence[int], transpose: bool = False, *, input_name: str = "hypernetworks") -> GridPlan:
    """The grid of every network at every strength (lines) by every prompt x seed."""
    lines = grid_lines(len(networks), strengths)
    if not lines:
        raise InputError(input_name, "no network to compare: give a run folder, hypernetworks or file names, "
                                     "or 0 among the strengths for the base model alone")
    if not prompts or not seeds:
        raise InputError("prompts" if not prompts else "seeds", "a grid needs at least one prompt and one seed")
    line_labels = [line_label(None if index is None else networks[index], strength) for index, strength in lines]
    pairs = [(p, seed) for p in range(len(prompts)) for seed in seeds]
    pair_labels = [column_label(prompts[p], seed) for p, seed in pairs]
    cells = []
    for line, (index, strength) in enumerate(lines):
        for pair, (p, seed) in enumerate(pairs):
            row, column = (pair, line) if transpose else (line, pair)
            cells.append(GridCell(index, strength, p, seed, row, column))
    if transpose:
        return GridPlan(cells, pair_labels, line_labels)
    return GridPlan(cells, line_labels, pair_labels)


def render_grid(plan: GridPlan, pictures: Sequence[Optional[torch.Tensor]],
                font_size: Optional[int] = None) -> torch.Tensor:
    """The labelled grid IMAGE [1,H,W,3]; pictures[i] ([1,h,w,3]) is plan.cells[i]'s, None where
    it was not sampled (drawn grey). InputError 'images' when no cell has a picture."""
    if len(pictures) != len(plan.cells):
        raise ValueError(f"{len(pictures)} pictures for a grid of {len(plan.cells)} cells")
    first = next((picture for picture in pictures if picture is not None), None)
    if first is None:
        raise InputError("images", "no cell of the grid was sampled")
    blank = torch.full_like(first, NOT_SAMPLED_GREY)
    rows: list[list[torch.Tensor]] = [[blank] * plan.columns for _ in range(plan.rows)]
    for cell, picture in zip(plan.cells, pictures):
        if picture is not None:
            rows[cell.row][cell.column] = picture
    return labelled_grid(rows, plan.row_labels, plan.column_labels, font_size)
