"""The A1111-column loss CSV and the loss-curve image."""
import csv

import numpy as np
import torch

from hypernet_studio.hypernet.train.csvlog import COLUMNS, LossCSV
from hypernet_studio.hypernet.train.lossplot import LEGEND, loss_curve_image, loss_plot_figure, moving_average


def _rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_rows_follow_a1111_columns_and_epochs(tmp_path):
    path = tmp_path / "hypernetwork_loss.csv"
    log = LossCSV(path, every=500, steps_per_epoch=300)
    for step in range(1, 1001):
        log.record(step, loss=0.1 + step * 1e-6, learn_rate=1e-5)
    rows = _rows(path)
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert [r["step"] for r in rows] == ["500", "1000"]
    assert rows[0] == {"step": "500", "epoch": "1", "epoch_step": "199", "loss": "0.1005000",
                       "learn_rate": "1e-05"}
    assert rows[1]["epoch"] == str(999 // 300) and rows[1]["epoch_step"] == str(999 % 300)


def test_resume_drops_rows_after_the_resume_step(tmp_path):
    path = tmp_path / "loss.csv"
    log = LossCSV(path, every=2, steps_per_epoch=10)
    for step in range(1, 9):
        log.record(step, 1.0, 0.1)
    resumed = LossCSV(path, every=2, steps_per_epoch=10, resume_step=4)
    resumed.record(6, 2.0, 0.1)
    assert [(r["step"], r["loss"]) for r in _rows(path)] == [("2", "1.0000000"), ("4", "1.0000000"),
                                                             ("6", "2.0000000")]


def test_zero_disables_the_csv(tmp_path):
    log = LossCSV(tmp_path / "x.csv", every=0, steps_per_epoch=1)
    assert not log.record(5, 1.0, 1.0)
    assert not (tmp_path / "x.csv").exists()


def test_loss_curve_is_an_image():
    image = loss_curve_image([1.0, 0.5, 0.25, 0.2, 0.1], width=200, height=120)
    assert image.shape == (1, 120, 200, 3) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    rising = loss_curve_image([0.1, 0.2, 0.3, 0.4, 0.5], width=200, height=120)
    assert not torch.equal(image, rising)
    assert loss_curve_image([], width=100, height=80).shape == (1, 80, 100, 3)


def test_the_plot_names_what_it_draws():
    """What is drawn, read back from the figure: titled axes, a legend that tells raw from smoothed
    loss, the validation loss and the learning rate on a second axis."""
    figure = loss_plot_figure([1.0, 0.8, 0.6, 0.5, 0.45, 0.4], first_step=11,
                              learning_rates=[1e-4, 9e-5, 8e-5, 7e-5, 6e-5, 5e-5],
                              validation_steps=[13, 16], validation_losses=[0.7, 0.65], title="net loss")
    loss_axes, rate_axes = figure.axes
    assert (loss_axes.get_xlabel(), loss_axes.get_ylabel(), rate_axes.get_ylabel()) == ("step", "loss",
                                                                                        "learning rate")
    legend = [text.get_text() for text in loss_axes.get_legend().get_texts()]
    assert legend == [LEGEND["raw"], LEGEND["smooth"], LEGEND["validation"], LEGEND["lr"]]
    raw, smooth, validation = loss_axes.get_lines()
    assert list(raw.get_xdata()) == list(range(11, 17)) and list(validation.get_xdata()) == [13, 16]
    assert list(rate_axes.get_lines()[0].get_ydata()) == [1e-4, 9e-5, 8e-5, 7e-5, 6e-5, 5e-5]
    assert "last 0.40000" in loss_axes.get_title()
    plain = loss_plot_figure([1.0, 0.5])
    assert [t.get_text() for t in plain.axes[0].get_legend().get_texts()] == [LEGEND["raw"], LEGEND["smooth"]]


def test_moving_average_matches_a_direct_computation():
    values = [3.0, 1.0, 4.0, 1.0, 5.0]
    expected = [np.mean(values[max(0, i - 1):i + 1]) for i in range(5)]
    assert np.allclose(moving_average(values, 2), expected)


def test_rows_are_appended_not_rewritten(tmp_path, monkeypatch):
    """A long run writes each row once: the file is opened for appending, never rewritten."""
    from hypernet_studio.hypernet.train import csvlog

    rewrites = []
    monkeypatch.setattr(csvlog, "atomic_write_text", lambda *args: rewrites.append(args))
    path = tmp_path / "loss.csv"
    log = LossCSV(path, every=1, steps_per_epoch=10)
    sizes = []
    for step in range(1, 201):
        log.record(step, 0.5, 1e-5)
        sizes.append(path.stat().st_size)
    assert not rewrites
    assert all(0 < b - a < 40 for a, b in zip(sizes, sizes[1:])), "each step adds one short line"
    assert [int(r["step"]) for r in _rows(path)] == list(range(1, 201))


def test_a_line_cut_short_by_a_crash_is_dropped_on_resume(tmp_path):
    path = tmp_path / "loss.csv"
    log = LossCSV(path, every=1, steps_per_epoch=10)
    for step in range(1, 4):
        log.record(step, 1.0, 0.1)
    path.write_text(path.read_text() + "4,0,3,0.99")  # the crash happened mid-row
    resumed = LossCSV(path, every=1, steps_per_epoch=10, resume_step=3)
    resumed.record(4, 2.0, 0.1)
    assert [(r["step"], r["loss"]) for r in _rows(path)][-2:] == [("3", "1.0000000"), ("4", "2.0000000")]
