"""The comparison table: one row per grid line, as text and as CSV; the sweep summary columns when
several runs are compared."""
import csv
import io
from pathlib import Path

from hypernet_studio.hypernet.compare.comparison_table import (
    shows_sweep,
    table_csv,
    table_rows,
    table_text,
    write_table_csv,
)
from hypernet_studio.hypernet.compare.grid_plan import plan_grid
from hypernet_studio.hypernet.compare.run_records import NetworkRecord, RunSummary

RELU = RunSummary("1,2,1 relu", 1234567, 3000, 0.125, 0.0875, 2000, 0.42)
SWISH = RunSummary(spec="1,2,2,1 swish", steps=3000)  # what a run recorded only partly
A = NetworkRecord("relu-3000", Path("/t/relu/relu-3000.pt"), 3000, 0.1, False, Path("/t/relu"), RELU, 2_500_000)
B = NetworkRecord("swish-best", Path("/t/swish/swish-best.pt"), 1500, 0.08, True, Path("/t/swish"), SWISH, 4_000_000)


def _lines(text):
    return [line.split() for line in text.splitlines()]


def test_one_row_per_line_with_step_strength_and_loss():
    rows = table_rows(plan_grid([A, B], [0, 1], ["p"], [1, 2]), [A, B])
    assert [(r.network, r.step, r.strength, r.val_loss, r.best) for r in rows] == [
        ("no hypernetwork", None, 0.0, None, False), ("relu-3000", 3000, 1.0, 0.1, False),
        ("swish-best", 1500, 1.0, 0.08, True)]


def test_the_text_table_without_a_sweep():
    rows = table_rows(plan_grid([A], [0, 0.5], ["p"], [1]), [A])
    assert _lines(table_text(rows, sweep=False)) == [["network", "step", "strength", "val_loss", "best"],
                                                     ["no", "hypernetwork", "-", "0", "-", "-"],
                                                     ["relu-3000", "3000", "0.5", "0.1", "-"]]


def test_the_text_table_of_a_sweep_compares_the_runs():
    text = table_text(table_rows(plan_grid([A, B], [1], ["p"], [1]), [A, B]), sweep=True)
    header, relu, swish = _lines(text)
    assert header[5:] == ["spec", "parameters", "file_size", "steps", "final_loss", "best_val_loss",
                          "best_val_step", "seconds_per_step"]
    assert relu == ["relu-3000", "3000", "1", "0.1", "-", "1,2,1", "relu", "1,234,567", "2.50", "MB", "3000",
                    "0.125", "0.0875", "2000", "0.42"]
    assert swish == ["swish-best", "1500", "1", "0.08", "best", "1,2,2,1", "swish", "-", "4.00", "MB", "3000",
                     "-", "-", "-", "-"]


def test_the_columns_line_up():
    lines = table_text(table_rows(plan_grid([A, B], [0, 1], ["p"], [1]), [A, B]), sweep=True).splitlines()
    step, spec, size = (lines[0].index(f"{name} ") for name in ("step", "spec", "file_size"))
    assert [line[step:].split()[0] for line in lines[1:]] == ["-", "3000", "1500"]
    assert [line[spec:spec + 13] for line in lines[1:]] == ["-            ", "1,2,1 relu   ", "1,2,2,1 swish"]
    assert [line[size:].split()[0] for line in lines[1:]] == ["-", "2.50", "4.00"]


def test_several_runs_make_a_sweep_one_run_does_not():
    same_run = NetworkRecord("relu-1500", Path("/t/relu/relu-1500.pt"), 1500, run_folder=Path("/t/relu"))
    assert not shows_sweep([A, same_run])
    assert shows_sweep([A, B])
    assert shows_sweep([NetworkRecord("x", Path("/m/x.pt")), NetworkRecord("y", Path("/m/y.pt"))])
    assert not shows_sweep([A])


def test_the_csv_holds_raw_values_and_leaves_the_unknown_empty(tmp_path):
    rows = table_rows(plan_grid([A, B], [0, 1], ["p"], [1]), [A, B])
    path = write_table_csv(rows, True, tmp_path / "compare" / "grid_00001.csv")
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid_00001.csv"]  # no temporary file left
    assert path.read_text(encoding="utf-8") == table_csv(rows, True)
    read = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert read[0] == {"network": "no hypernetwork", "step": "", "strength": "0.0", "val_loss": "", "best": "",
                       "spec": "", "parameters": "", "file_size": "", "steps": "", "final_loss": "",
                       "best_val_loss": "", "best_val_step": "", "seconds_per_step": ""}
    assert read[1] == {"network": "relu-3000", "step": "3000", "strength": "1.0", "val_loss": "0.1", "best": "",
                       "spec": "1,2,1 relu", "parameters": "1234567", "file_size": "2500000", "steps": "3000",
                       "final_loss": "0.125", "best_val_loss": "0.0875", "best_val_step": "2000",
                       "seconds_per_step": "0.42"}
    assert read[2]["best"] == "best" and read[2]["final_loss"] == ""


def test_the_csv_of_one_run_has_only_the_line_columns():
    header = table_csv(table_rows(plan_grid([A], [1], ["p"], [1]), [A]), False).splitlines()[0]
    assert header == "network,step,strength,val_loss,best"
