"""Compare Hypernets: one labelled grid of step files, networks and strengths, sampled through the
host's own KSampler (nodes/compare_cells.py), with a table of what each run recorded. The plan,
the labels, the step-file choice and the table are the library's (hypernet/compare/)."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from ..hypernet.compare.comparison_table import shows_sweep, table_rows, table_text, write_table_csv
from ..hypernet.compare.grid_plan import (
    GridPlan,
    check_pixel_budget,
    line_count,
    parse_prompts,
    parse_seeds,
    parse_strengths,
    plan_grid,
    render_grid,
)
from ..hypernet.compare.run_records import NetworkRecord, network_record, run_folder_of, run_records, unrecorded_network
from ..hypernet.compare.step_files import select_step_files
from ..hypernet.errors import InputError
from ..hypernet.files import UnsafePathError, check_name_text
from ..hypernet.images import save_png
from ..hypernet.network import Hypernetwork
from .compare_cells import CellSampler, SamplerSettings, done_count, sample_cells
from .host import HOST, TRAINING_FOLDER
from .paths import readable_folder
from .widgets import Node, boolean, combo, decimal, integer, mappings, single_values, socket, text, validation

logger = logging.getLogger(__name__)

COMPARE_FOLDER = "hypernet_compare"  # under the output folder: the grids and their tables
GRID_STEM = "compare"
MIN_SIDE, MAX_SIDE = 64, 8192
Source = Union[Path, Hypernetwork]  # a file, loaded when its line is sampled, or a network given as an input


def _lines(value: str) -> list[str]:
    return [line.strip() for line in (value or "").splitlines() if line.strip()]


def training_root() -> Path:
    return HOST.output_directory() / TRAINING_FOLDER


def run_folder(line: str) -> Path:
    """A run named in `runs`: a folder name under output/hypernet_training, or a path (inside
    ComfyUI only within the folders it reads from, as Load Images)."""
    named = Path(os.path.expanduser(line))
    return readable_folder(line if named.is_absolute() else str(training_root() / line), "runs")


def named_file(name: str) -> Path:
    """A file of `hypernetwork_names`, found as Load Hypernet finds it."""
    try:
        check_name_text(name)
        return HOST.resolve_model("hypernetworks", name)
    except UnsafePathError as exc:
        raise InputError("hypernetwork_names", str(exc)) from None
    except FileNotFoundError:
        folders = ", ".join(str(f) for f in HOST.model_folders("hypernetworks"))
        raise InputError("hypernetwork_names", f"{name!r} not found; looked in {folders}") from None


@dataclass(frozen=True)
class Networks:
    """The networks to compare, in row order: what each recorded, and where each comes from."""

    records: list[NetworkRecord]
    sources: list[Source]


def chosen_networks(runs: str, every_nth: int, hypernetwork_names: str, hypernetworks: Sequence[Any]) -> Networks:
    """The connected networks first, then each run's chosen step files, then the named files."""
    records: list[NetworkRecord] = []
    sources: list[Source] = []
    for network in hypernetworks:
        file = Path(network.filename) if getattr(network, "filename", None) else None
        if file is not None and file.is_file():
            records.append(network_record(file, run_folder_of(file, training_root())))
        else:
            records.append(unrecorded_network(network.name, network.step))
        sources.append(network)
    for line in _lines(runs):
        folder = run_folder(line)
        paths = select_step_files(folder, every_nth, input_name="runs")
        records += run_records(folder, paths)
        sources += paths
    for name in _lines(hypernetwork_names):
        path = named_file(name)
        records.append(network_record(path, run_folder_of(path, training_root())))
        sources.append(path)
    return Networks(records, sources)


def _check_side(name: str, value: Optional[int]) -> None:
    if value is not None and (not MIN_SIDE <= int(value) <= MAX_SIDE or int(value) % 8):
        raise InputError(name, f"{value}: give a multiple of 8 from {MIN_SIDE} to {MAX_SIDE}")


def check_inputs(runs: Optional[str], every_nth: Optional[int], hypernetwork_names: Optional[str],
                 strengths: Optional[str], prompts: Optional[str], seeds: Optional[str], width: Optional[int],
                 height: Optional[int]) -> None:
    """What Compare Hypernets can refuse at queue time, before any model loads: numbers, prompts,
    runs and files that are not there (or not readable on this server), and a grid over the pixel
    budget (counting the networks it knows of: connected ones arrive later). Linked inputs are None."""
    _check_side("width", width)
    _check_side("height", height)
    parsed_strengths = parse_strengths(strengths) if strengths is not None else None
    prompt_count = len(parse_prompts(prompts)) if prompts is not None else None
    seed_count = len(parse_seeds(seeds)) if seeds is not None else None
    networks = 0
    if runs is not None and every_nth is not None:
        networks += sum(len(select_step_files(run_folder(line), int(every_nth), input_name="runs"))
                        for line in _lines(runs))
    if hypernetwork_names is not None:
        networks += len([named_file(name) for name in _lines(hypernetwork_names)])
    if None not in (parsed_strengths, prompt_count, seed_count, width, height):
        check_pixel_budget(line_count(networks, parsed_strengths), prompt_count * seed_count, width, height)


class NetworkFiles:
    """network(index) for the sampling loop: a connected network as it is, a file loaded when its
    line comes (the last one kept for its next strengths)."""

    def __init__(self, sources: Sequence[Source]):
        self.sources = list(sources)
        self.loaded: tuple[Optional[int], Optional[Hypernetwork]] = (None, None)

    def __call__(self, index: int) -> Hypernetwork:
        source = self.sources[index]
        if isinstance(source, Hypernetwork):
            return source
        if self.loaded[0] != index or self.loaded[1] is None:
            from ..hypernet.file_format import HypernetFileError, load_hypernetwork

            try:
                self.loaded = (index, load_hypernetwork(source))
            except HypernetFileError as exc:
                raise InputError("runs", str(exc)) from None
        return self.loaded[1]


def _reserve_grid_path(folder: Path) -> Path:
    """compare_NNNNN.png, one above the highest number there, created empty and exclusively so that
    two runs at once never write the same file (its table goes beside it with the same stem)."""
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"{GRID_STEM}_(\d+)\.(png|csv)$")
    counter = max((int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))), default=0)
    while True:
        counter += 1
        path = folder / f"{GRID_STEM}_{counter:05d}.png"
        if path.with_suffix(".csv").exists():
            continue
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue


@dataclass(frozen=True)
class SavedGrid:
    grid: torch.Tensor
    png: Path
    csv: Path
    table: str


def save_grid(plan: GridPlan, networks: Networks, pictures: Sequence[Optional[torch.Tensor]]) -> SavedGrid:
    """Render the grid (cells not sampled blank), save it and its table under output/hypernet_compare."""
    grid = render_grid(plan, pictures)
    rows, sweep = table_rows(plan, networks.records), shows_sweep(networks.records)
    png = save_png(grid, _reserve_grid_path(HOST.output_directory() / COMPARE_FOLDER))
    csv = write_table_csv(rows, sweep, png.with_suffix(".csv"))
    for path in (png, csv):
        HOST.wrote(path)
    return SavedGrid(grid, png, csv, table_text(rows, sweep))


@dataclass(frozen=True)
class GridRequest:
    """The node's widget values, parsed."""

    plan: GridPlan
    networks: Networks
    prompts: list[str]
    negative: str
    settings: SamplerSettings


def grid_request(widgets: dict[str, Any], hypernetworks: Sequence[Any]) -> GridRequest:
    """Everything checked and planned before any sampling."""
    check_inputs(**{name: widgets[name] for name in ("runs", "every_nth", "hypernetwork_names", "strengths",
                                                      "prompts", "seeds", "width", "height")})
    networks = chosen_networks(widgets["runs"], int(widgets["every_nth"]), widgets["hypernetwork_names"],
                               hypernetworks)
    if not networks.records:
        raise InputError("runs", "nothing to compare: name a run here, files in hypernetwork_names, or connect "
                                 "hypernetworks")
    strengths, prompts = parse_strengths(widgets["strengths"]), parse_prompts(widgets["prompts"])
    seeds = parse_seeds(widgets["seeds"])
    check_pixel_budget(line_count(len(networks.records), strengths), len(prompts) * len(seeds),
                       widgets["width"], widgets["height"])
    plan = plan_grid(networks.records, strengths, prompts, seeds, bool(widgets["transpose"]))
    settings = SamplerSettings(widgets["sampler_name"], widgets["scheduler"], int(widgets["steps"]),
                               float(widgets["cfg"]), int(widgets["width"]), int(widgets["height"]))
    return GridRequest(plan, networks, prompts, widgets["negative"], settings)


def run_grid(model: Any, clip: Any, vae: Any, request: GridRequest) -> tuple[SavedGrid, list[torch.Tensor]]:
    """Sample every cell and save the grid; after an interrupt, save the cells done, say how many,
    and raise the host's interrupt on."""
    node_id = HOST.current_node_id()
    warned: set[str] = set()

    def show(warning: str) -> None:
        if warning not in warned:
            warned.add(warning)
            HOST.send_progress_text(warning, node_id)

    pictures: list[Optional[torch.Tensor]] = [None] * len(request.plan.cells)
    try:
        sampler = CellSampler(clip, vae, request.prompts, request.negative, request.settings)
        sample_cells(request.plan, model, NetworkFiles(request.networks.sources), sampler, pictures, warn=show)
    except BaseException as exc:
        if HOST.is_interrupt(exc) and done_count(pictures):
            saved = save_grid(request.plan, request.networks, pictures)
            report = (f"interrupted: {done_count(pictures)} of {len(pictures)} cells done; the partial grid is "
                      f"saved as {saved.png}")
        elif HOST.is_interrupt(exc):
            report = f"interrupted: 0 of {len(pictures)} cells done; no grid saved"
        else:
            raise
        logger.warning(report)
        HOST.send_progress_text(report, node_id)
        raise
    order = sorted(range(len(pictures)), key=lambda i: (request.plan.cells[i].row, request.plan.cells[i].column))
    return save_grid(request.plan, request.networks, pictures), [pictures[i] for i in order]


def _sampler_choices(name: str) -> list[str]:
    """The host KSampler's own list (ComfyUI's samplers inside ComfyUI)."""
    return list(HOST.builtin_node("KSampler").INPUT_TYPES()["required"][name][0])


def compare_inputs() -> dict[str, Any]:
    return {
        "model": socket("MODEL", tooltip="The base model: loaded once, patched per network and strength."),
        "clip": socket("CLIP", tooltip="Encodes each prompt once for the whole grid."),
        "vae": socket("VAE", tooltip="Decodes every cell."),
        "runs": text(default="", multiline=True,
                     tooltip="Training runs, one per line: a folder under output/hypernet_training (its NAME-STEP.pt "
                             "step files and NAME-best.pt), or a path."),
        "every_nth": integer(default=1, min=1, max=100_000,
                             tooltip="Of each run, every Nth step file; the last and NAME-best.pt always."),
        "hypernetwork_names": text(default="", multiline=True,
                                   tooltip="Files in models/hypernetworks, one per line, as Load Hypernet names them."),
        "strengths": text(default="0, 0.5, 1",
                          tooltip="Strengths, e.g. '0, 0.5, 1'; 0 gives one 'no hypernetwork' row: the base model."),
        "prompts": text(default="a photo of a cat", multiline=True, tooltip="Prompts, one per line."),
        "negative": text(default="", multiline=True, tooltip="The negative prompt of every cell."),
        "seeds": text(default="0", tooltip="Seeds, e.g. '1, 2, 3': columns are prompt x seed."),
        "sampler_name": combo(_sampler_choices("sampler_name"), tooltip="KSampler's sampler, the same for every cell."),
        "scheduler": combo(_sampler_choices("scheduler"), tooltip="KSampler's scheduler."),
        "steps": integer(default=20, min=1, max=10000, tooltip="Sampling steps per cell."),
        "cfg": decimal(default=8.0, min=0.0, max=100.0, step=0.1, tooltip="Classifier-free guidance scale."),
        "width": integer(default=512, min=MIN_SIDE, max=MAX_SIDE, step=8, tooltip="Width of every cell."),
        "height": integer(default=512, min=MIN_SIDE, max=MAX_SIDE, step=8, tooltip="Height of every cell."),
        "transpose": boolean(default=False,
                             tooltip="Off: rows are networks (x strengths), columns prompt x seed. On: swapped."),
    }


class CompareHypernetsNode(Node):
    """Compare networks side by side: a training run's step files, connected networks (Train Hypernet
    over several specs) or named files, at several strengths, over prompts x seeds, with the same
    sampler settings in every cell. Saves the labelled grid and a table (step, strength, validation
    loss; the sweep summary for several runs) under output/hypernet_compare/."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = ("HN_CompareHypernets", "Compare Hypernets", "hypernetwork/train",
                                                 "compare")
    INPUT_IS_LIST = True
    RETURN_TYPES, RETURN_NAMES = ("IMAGE", "IMAGE", "STRING"), ("grid", "images", "table")
    OUTPUT_IS_LIST = (False, True, False)
    OUTPUT_TOOLTIPS = ("The labelled grid.", "Every cell, row by row.", "The table shown on the node.")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": compare_inputs(), "optional": {
            "hypernetworks": socket("HYPERNETWORK", tooltip="Networks to compare (a list: Train Hypernet over "
                                                            "several specs connects straight in).")}}

    @classmethod
    def VALIDATE_INPUTS(cls, runs, every_nth, hypernetwork_names, strengths, prompts, seeds, width, height):
        values = single_values({key: value for key, value in locals().items() if key != "cls"})
        return validation(lambda: check_inputs(**values))

    def compare(self, model, clip, vae, hypernetworks=None, **widgets):
        request = grid_request(single_values(widgets), list(hypernetworks or []))
        saved, images = run_grid(model[0], clip[0], vae[0], request)
        relative = saved.png.relative_to(HOST.output_directory())
        shown = {"filename": relative.name, "subfolder": relative.parent.as_posix(), "type": "output"}
        return {"ui": {"images": [shown], "text": [saved.table, f"saved {saved.png} and {saved.csv.name}"]},
                "result": (saved.grid, images, saved.table)}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings([CompareHypernetsNode])
