"""A re-run never silently replaces an earlier run's files; continuing a run from its own step
file writes on under the same name."""
import torch

from hypernet_studio.hypernet.train.run_files import RunFolders, run_files


def _run(folders, name, last_step, save_every=5):
    """Lay out what a finished run of `last_step` steps leaves behind."""
    log = folders.log_root / name
    (log / "images").mkdir(parents=True, exist_ok=True)
    for step in range(save_every, last_step + 1, save_every):
        torch.save({"step": step}, log / f"{name}-{step}.pt")
        (log / "images" / f"{name}-{step}.png").write_bytes(b"png")
    (log / "hypernetwork_loss.csv").write_text("step\n")
    folders.models_folder.mkdir(parents=True, exist_ok=True)
    torch.save({"step": last_step}, folders.models_folder / f"{name}.pt")


def test_a_fresh_name_is_used_as_is(tmp_path):
    files = run_files(RunFolders(tmp_path / "models", tmp_path / "log"), "style")
    assert (files.name, files.final_path, files.log_dir) == ("style", tmp_path / "models" / "style.pt",
                                                             tmp_path / "log" / "style")


def test_a_name_with_results_takes_the_next_number(tmp_path):
    folders = RunFolders(tmp_path / "models", tmp_path / "log")
    _run(folders, "style", 10)
    assert run_files(folders, "style").name == "style_00001"
    _run(folders, "style_00001", 10)
    assert run_files(folders, "style").name == "style_00002"
    only_a_log = RunFolders(tmp_path / "m2", tmp_path / "log")
    assert run_files(only_a_log, "style").name == "style_00002", "a log folder alone is a result too"


def test_overwrite_keeps_the_name(tmp_path):
    folders = RunFolders(tmp_path / "models", tmp_path / "log", overwrite=True)
    _run(folders, "style", 10)
    assert run_files(folders, "style").name == "style"


def test_continuing_from_the_last_step_file_writes_on(tmp_path):
    folders = RunFolders(tmp_path / "models", tmp_path / "log")
    _run(folders, "style", 10)
    last = tmp_path / "log" / "style" / "style-10.pt"
    assert run_files(folders, "style", start_step=10, starting_file=str(last)).name == "style"
    final = tmp_path / "models" / "style.pt"
    assert run_files(folders, "style", start_step=10, starting_file=str(final)).name == "style"


def test_continuing_from_an_earlier_step_keeps_the_later_results(tmp_path):
    folders = RunFolders(tmp_path / "models", tmp_path / "log")
    _run(folders, "style", 10)
    middle = tmp_path / "log" / "style" / "style-5.pt"
    assert run_files(folders, "style", start_step=5, starting_file=str(middle)).name == "style_00001"


def test_an_interrupted_run_can_be_resumed_in_place(tmp_path):
    """Interrupted at step 7 (between saves): the step file and the final file both hold step 7."""
    folders = RunFolders(tmp_path / "models", tmp_path / "log")
    _run(folders, "style", 7)
    torch.save({"step": 7}, tmp_path / "log" / "style" / "style-7.pt")
    step_file = tmp_path / "log" / "style" / "style-7.pt"
    assert run_files(folders, "style", start_step=7, starting_file=str(step_file)).name == "style"


def test_a_second_resume_of_the_same_step_file_never_takes_another_runs_name(tmp_path):
    """Issue 17: train twice, resume twice from the first run's step file. The second resume must
    not write into the second run (style_00001), whose files hold no later step."""
    folders = RunFolders(tmp_path / "models", tmp_path / "log")
    _run(folders, "style", 10)
    _run(folders, "style_00001", 10)
    step_file = str(tmp_path / "log" / "style" / "style-10.pt")
    assert run_files(folders, "style", start_step=10, starting_file=step_file).name == "style"
    _run(folders, "style", 15)  # the first resume continued the first run to step 15
    assert run_files(folders, "style", start_step=10, starting_file=step_file).name == "style_00002"


def test_a_name_is_free_only_when_none_of_its_files_exist(tmp_path):
    folders = RunFolders(tmp_path / "models", tmp_path / "log")
    folders.models_folder.mkdir()
    (folders.models_folder / "style.pt.optim").write_bytes(b"state")
    assert run_files(folders, "style").name == "style_00001", "an .optim alone belongs to a run"
    (folders.log_root / "style_00001").mkdir(parents=True)
    (folders.log_root / "style_00001" / "hypernetwork_loss.csv").write_text("step\n")
    assert run_files(folders, "style").name == "style_00002", "a CSV alone belongs to a run"


def test_continuing_another_names_file_never_writes_into_an_existing_run(tmp_path):
    """A network from elsewhere (other.pt, step 20) trained on under 'style', which holds step 10."""
    folders = RunFolders(tmp_path / "models", tmp_path / "log")
    _run(folders, "style", 10)
    _run(folders, "other", 20)
    other = str(tmp_path / "models" / "other.pt")
    assert run_files(folders, "style", start_step=20, starting_file=other).name == "style_00001"
