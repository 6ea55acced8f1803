"""Train Hypernet's loss curve after a resume covers the whole run (issue 17), read back from what
the node hands the plotter, not from pixels."""
import csv

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train import session

from .test_train import _run


def test_a_resumed_run_plots_every_step_of_the_run(headless_dirs, monkeypatch):
    drawn = []
    plot = session.loss_curve_image
    monkeypatch.setattr(session, "loss_curve_image", lambda history, **kw: drawn.append(history) or plot(history, **kw))
    _run(steps=2, save_every=2, preview_every=0, inputs={"hypernet_spec": [HypernetSpec(sizes=None)]})
    log = headless_dirs / "output" / "hypernet_training" / "tinynet"
    with (log / "hypernetwork_loss.csv").open(newline="") as handle:
        first_part = [float(row["loss"]) for row in csv.DictReader(handle)]
    _run(steps=4, save_every=2, preview_every=0, inputs={"hypernetwork": [load_hypernetwork(log / "tinynet-2.pt")]})
    resumed = drawn[-1]
    assert resumed.steps == [1, 2, 3, 4], "the steps before the resume come from the CSV"
    assert resumed.losses[:2] == first_part and len(resumed.learning_rates) == 4
    assert (log / "loss_curve.png").is_file()
