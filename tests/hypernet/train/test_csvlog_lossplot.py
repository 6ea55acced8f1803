"""The A1111-column loss CSV and the loss-curve image."""
import csv

import numpy as np
import torch

from hypernet_studio.hypernet.train.config import TrainResult
from hypernet_studio.hypernet.train.csvlog import COLUMNS, LossCSV
from hypernet_studio.hypernet.train.lossplot import (
    LEGEND,
    LossHistory,
    loss_curve_image,
    loss_plot_figure,
    smoothing_window,
    step_moving_average,
)


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
    image = loss_curve_image(LossHistory.of_steps([1.0, 0.5, 0.25, 0.2, 0.1]), width=200, height=120)
    assert image.shape == (1, 120, 200, 3) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    rising = loss_curve_image(LossHistory.of_steps([0.1, 0.2, 0.3, 0.4, 0.5]), width=200, height=120)
    assert not torch.equal(image, rising)
    assert loss_curve_image(LossHistory(), width=100, height=80).shape == (1, 80, 100, 3)


def test_the_plot_names_what_it_draws():
    """What is drawn, read back from the figure: titled axes, a legend that tells raw from smoothed
    loss, the validation loss and the learning rate on a second axis."""
    figure = loss_plot_figure(LossHistory.of_steps([1.0, 0.8, 0.6, 0.5, 0.45, 0.4], first_step=11,
                                                   learning_rates=[1e-4, 9e-5, 8e-5, 7e-5, 6e-5, 5e-5],
                                                   validation_steps=[13, 16], validation_losses=[0.7, 0.65]),
                              title="net loss")
    loss_axes, rate_axes = figure.axes
    assert (loss_axes.get_xlabel(), loss_axes.get_ylabel(), rate_axes.get_ylabel()) == ("step", "loss",
                                                                                        "learning rate")
    legend = [text.get_text() for text in loss_axes.get_legend().get_texts()]
    assert legend == [LEGEND["raw"], LEGEND["smooth"], LEGEND["validation"], LEGEND["lr"]]
    raw, smooth, validation = loss_axes.get_lines()
    assert list(raw.get_xdata()) == list(range(11, 17)) and list(validation.get_xdata()) == [13, 16]
    assert list(rate_axes.get_lines()[0].get_ydata()) == [1e-4, 9e-5, 8e-5, 7e-5, 6e-5, 5e-5]
    assert "last 0.40000" in loss_axes.get_title()
    plain = loss_plot_figure(LossHistory.of_steps([1.0, 0.5]))
    assert [t.get_text() for t in plain.axes[0].get_legend().get_texts()] == [LEGEND["raw"], LEGEND["smooth"]]


def test_moving_average_matches_a_direct_computation():
    values = [3.0, 1.0, 4.0, 1.0, 5.0]
    expected = [np.mean(values[max(0, i - 1):i + 1]) for i in range(5)]
    assert np.allclose(step_moving_average(range(1, 6), values, 2), expected)


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


def _resumed_result(tmp_path):
    """A run trained steps 1..6 (CSV every 2 steps, with a validation at 4), was cut short, and a
    continued run trained steps 5..8: the CSV still holds rows 2 and 4 of the first part."""
    path = tmp_path / "loss.csv"
    first = LossCSV(path, every=2, steps_per_epoch=10, columns=COLUMNS + ("val_loss",))
    for step in range(1, 7):
        first.record(step, 1.0 - step / 10, 2e-4, val_loss=0.95 if step == 4 else None)
    resumed = LossCSV(path, every=2, steps_per_epoch=10, resume_step=4, columns=COLUMNS + ("val_loss",))
    result = TrainResult(None, first_step=5, csv_path=path)
    for step in range(5, 9):
        resumed.record(step, 0.5 - step / 100, 2e-4)
        result.losses.append(0.5 - step / 100)
        result.learning_rates.append(2e-4)
    return result


def test_a_continued_run_draws_the_whole_run_from_its_csv(tmp_path):
    """Issue 17: after a resume, the curve showed only the resumed steps though the CSV held all."""
    history = LossHistory.of_run(_resumed_result(tmp_path))
    assert history.steps == [2, 4, 5, 6, 7, 8]
    assert np.allclose(history.losses, [0.8, 0.6, 0.45, 0.44, 0.43, 0.42])
    assert history.learning_rates == [2e-4] * 6
    assert (history.validation_steps, history.validation_losses) == ([4], [0.95])
    raw = loss_plot_figure(history).axes[0].get_lines()[0]
    assert list(raw.get_xdata()) == [2, 4, 5, 6, 7, 8]


def test_a_fresh_run_draws_only_its_own_steps(tmp_path):
    result = TrainResult(None, losses=[0.3, 0.2], learning_rates=[1e-4, 1e-4], first_step=1,
                         csv_path=tmp_path / "none-yet.csv")
    assert LossHistory.of_run(result).steps == [1, 2]


def test_the_moving_average_smooths_even_a_short_run():
    """Issue 17: with fewer than 40 steps the window was 1 step, so the line equalled the raw loss."""
    losses = [1.0, 0.0] * 10
    smooth = loss_plot_figure(LossHistory.of_steps(losses)).axes[0].get_lines()[1]
    assert smoothing_window(list(range(1, 21))) == 2
    assert np.allclose(smooth.get_ydata()[1:], 0.5), "each point is the mean of its 2-step window"
    assert not np.allclose(smooth.get_ydata(), losses)
    assert smoothing_window(list(range(1, 1001))) == 100, "a tenth of the drawn steps"


def test_the_moving_average_counts_steps_not_points():
    """CSV rows 100 steps apart do not average with each other over a 10-step window."""
    steps, values = [100, 200, 201, 202], [4.0, 2.0, 1.0, 0.0]
    assert np.allclose(step_moving_average(steps, values, 10), [4.0, 2.0, 1.5, 1.0])


def test_a_constant_learning_rate_gets_an_axis_from_zero():
    """Issue 17: a constant 2e-4 got an axis of 1.900-2.100e-4, a zoom into nothing."""
    figure = loss_plot_figure(LossHistory.of_steps([0.5] * 5, learning_rates=[2e-4] * 5))
    bottom, top = figure.axes[1].get_ylim()
    assert bottom == 0.0 and np.isclose(top, 2.2e-4, rtol=1e-9)
    ticks = [tick for tick in figure.axes[1].get_yticks() if bottom <= tick <= top]
    assert ticks[0] == 0.0 and ticks[-1] >= 1.5e-4, "ticks spread over the whole axis"


def test_step_ticks_are_whole_numbers():
    """Issue 17: a short run's step axis had ticks like 42.5."""
    figure = loss_plot_figure(LossHistory.of_steps([0.5, 0.4, 0.3, 0.2], first_step=41))
    figure.canvas.draw()
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(tick).is_integer() for tick in ticks)
