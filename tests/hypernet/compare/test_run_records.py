"""What a run recorded: steps, validation losses, the best, and run_summary.json."""
import json

from hypernet_studio.hypernet.compare.run_records import (
    RunSummary,
    network_record,
    read_run_summary,
    read_val_losses,
    run_folder_of,
    run_records,
    unrecorded_network,
)
from hypernet_studio.hypernet.train.resume_files import write_optimizer_state

SUMMARY = {"spec": "1,2,1 swish", "parameters": 1234567, "steps": 3000, "final_loss": 0.125,
           "best_val_loss": 0.0875, "best_val_step": 2000, "seconds_per_step": 0.42}


def test_the_summary_is_read_with_every_key(make_run):
    folder = make_run("cat", [1000], summary=SUMMARY)
    assert read_run_summary(folder) == RunSummary(**SUMMARY)


def test_a_missing_summary_is_none(make_run):
    assert read_run_summary(make_run("cat", [1000])) is None


def test_missing_null_and_ill_typed_keys_are_unknown(make_run):
    folder = make_run("cat", [1000], summary={"spec": "1,2,1 relu", "parameters": True, "steps": "3000",
                                              "final_loss": None, "best_val_step": 2000.0, "extra": 1})
    assert read_run_summary(folder) == RunSummary(spec="1,2,1 relu", best_val_step=2000)


def test_an_unreadable_summary_is_none(make_run):
    folder = make_run("cat", [1000])
    (folder / "run_summary.json").write_text("{\"spec\": ", encoding="utf-8")
    assert read_run_summary(folder) is None
    (folder / "run_summary.json").write_text(json.dumps([1, 2]), encoding="utf-8")
    assert read_run_summary(folder) is None


def test_validation_losses_come_from_the_rows_that_hold_one(make_run, loss_csv):
    folder = make_run("cat", [100])
    loss_csv(folder, [(50, 0.3, None), (100, 0.25, 0.2), (150, 0.2, None), (200, 0.1, 0.15)])
    assert read_val_losses(folder) == {100: 0.2, 200: 0.15}


def test_a_log_without_validation_gives_no_losses(make_run):
    folder = make_run("cat", [100])
    (folder / "hypernetwork_loss.csv").write_text("step,epoch,epoch_step,loss,learn_rate\n100,0,99,0.25,0.001\n",
                                                  encoding="utf-8")
    assert read_val_losses(folder) == {}
    assert read_val_losses(folder / "missing") == {}


def test_step_files_get_their_step_loss_and_the_best_mark(make_run, loss_csv):
    folder = make_run("cat", [100, 200, 300], best=200)
    loss_csv(folder, [(100, 0.3, 0.25), (200, 0.2, 0.125), (300, 0.1, 0.175)])
    paths = [folder / "cat-100.pt", folder / "cat-200.pt", folder / "cat-300.pt", folder / "cat-best.pt"]
    records = run_records(folder, paths)
    assert [(r.name, r.step, r.val_loss, r.is_best) for r in records] == [
        ("cat-100", 100, 0.25, False), ("cat-200", 200, 0.125, True), ("cat-300", 300, 0.175, False),
        ("cat-best", 200, 0.125, True)]
    assert all(r.run_folder == folder and r.summary is None for r in records)
    assert [r.file_size for r in records] == [p.stat().st_size for p in paths]


def test_without_a_best_file_the_summary_then_the_lowest_loss_says_which_is_best(make_run, loss_csv):
    folder = make_run("cat", [100, 200, 300], summary={**SUMMARY, "best_val_step": 300})
    loss_csv(folder, [(100, 0.3, 0.25), (200, 0.2, 0.125), (300, 0.1, 0.175)])
    assert [r.is_best for r in run_records(folder, [folder / "cat-200.pt", folder / "cat-300.pt"])] == [False, True]
    (folder / "run_summary.json").unlink()
    assert [r.is_best for r in run_records(folder, [folder / "cat-200.pt", folder / "cat-300.pt"])] == [True, False]


def test_a_run_without_validation_marks_nothing_best(make_run):
    folder = make_run("cat", [100, 200])
    assert [(r.val_loss, r.is_best) for r in run_records(folder, sorted(folder.glob("*.pt")))] == [(None, False)] * 2


def test_a_file_no_run_recorded_keeps_its_stored_step(tmp_path, network_file):
    path = network_file(tmp_path / "models" / "style.pt", 750)
    record = network_record(path, None)
    assert (record.name, record.path, record.step, record.val_loss, record.is_best) == ("style", path, 750, None, False)
    assert record.run_folder is None and record.file_size == path.stat().st_size


def test_a_final_file_reads_its_runs_folder(make_run, tmp_path, loss_csv, network_file):
    folder = make_run("cat", [100, 200], best=200, summary=SUMMARY)
    loss_csv(folder, [(100, 0.3, 0.25), (200, 0.2, 0.125)])
    final = network_file(tmp_path / "models" / "cat.pt", 200)
    record = network_record(final, run_folder_of(final, tmp_path / "training"))
    assert (record.name, record.step, record.val_loss, record.is_best) == ("cat", 200, 0.125, True)
    assert record.run_folder == folder and record.summary == RunSummary(**SUMMARY)


def test_a_network_known_by_name_only():
    record = unrecorded_network("sweep 1,2,1", 40)
    assert (record.name, record.path, record.step, record.val_loss, record.file_size) == ("sweep 1,2,1", None, 40,
                                                                                          None, None)


def test_the_run_folder_of_a_file(make_run, tmp_path):
    root = make_run("cat", [100]).parent
    assert run_folder_of(root / "cat" / "cat-100.pt", root) == root / "cat"
    assert run_folder_of(tmp_path / "models" / "cat.pt", root) == root / "cat"
    assert run_folder_of(tmp_path / "models" / "dog.pt", root) is None  # no folder training/dog
    assert run_folder_of(tmp_path / "models" / "...pt", root) is None  # stem "..": no run of that name


class _Optimizer:
    """What write_optimizer_state() reads of an optimizer (a real one costs seconds to import here)."""

    def state_dict(self):
        return {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}


def _write_best_state(best_path, val_loss):
    """The .optim a run writes beside NAME-best.pt: the optimizer's state and the validation loss."""
    write_optimizer_state(best_path, _Optimizer(), {"step": 200, "val_loss": val_loss})


def test_without_a_csv_the_best_files_state_gives_its_loss(make_run):
    folder = make_run("cat", [100, 200], best=200)  # csv_every 0: no loss CSV at all
    _write_best_state(folder / "cat-best.pt", 0.0625)
    records = run_records(folder, [folder / "cat-100.pt", folder / "cat-200.pt", folder / "cat-best.pt"])
    assert [(r.step, r.val_loss, r.is_best) for r in records] == [(100, None, False), (200, 0.0625, True),
                                                                  (200, 0.0625, True)]


def test_a_stale_best_state_is_ignored_and_the_summary_says_the_loss(make_run, network_file):
    folder = make_run("cat", [100, 200], best=200, summary={"best_val_step": 200, "best_val_loss": 0.07})
    _write_best_state(folder / "cat-best.pt", 0.0625)
    network_file(folder / "cat-best.pt", 200)  # rewritten after its .optim: the hash no longer matches
    (folder / "cat-best.pt").write_bytes((folder / "cat-best.pt").read_bytes() + b"\0")
    assert [(r.val_loss, r.is_best) for r in run_records(folder, [folder / "cat-best.pt"])] == [(0.07, True)]
