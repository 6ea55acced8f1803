"""Which step files of a run are compared: every Nth in step order, always the last and the best,
never another run's files, never .optim files."""
import pytest

from hypernet_studio.hypernet.compare.step_files import select_step_files, step_of
from hypernet_studio.hypernet.errors import InputError


def _names(paths):
    return [path.name for path in paths]


def test_every_file_in_numeric_step_order(make_run):
    folder = make_run("cat", [1000, 500, 10000, 2000, 1500])
    assert _names(select_step_files(folder, 1)) == ["cat-500.pt", "cat-1000.pt", "cat-1500.pt", "cat-2000.pt",
                                                    "cat-10000.pt"]


def test_every_nth_counts_files_and_always_adds_the_last(make_run):
    folder = make_run("cat", [500 * k for k in range(1, 8)])  # 500 ... 3500
    assert _names(select_step_files(folder, 3)) == ["cat-1500.pt", "cat-3000.pt", "cat-3500.pt"]
    assert _names(select_step_files(folder, 7)) == ["cat-3500.pt"]
    assert _names(select_step_files(folder, 50)) == ["cat-3500.pt"]


def test_the_last_is_not_repeated_when_it_is_an_nth_file(make_run):
    folder = make_run("cat", [100, 200, 300, 400])
    assert _names(select_step_files(folder, 2)) == ["cat-200.pt", "cat-400.pt"]


def test_the_best_file_always_comes_last(make_run):
    folder = make_run("cat", [100, 200, 300, 400, 500], best=200)
    assert _names(select_step_files(folder, 2)) == ["cat-200.pt", "cat-400.pt", "cat-500.pt", "cat-best.pt"]


def test_other_runs_files_and_optimizer_states_are_never_picked(make_run):
    folder = make_run("cat", [100, 200], best=200)
    for stray in ["cat-1-300.pt", "cat_00001-400.pt", "cats-500.pt", "xcat-600.pt", "cat-2.5.pt", "cat-1e3.pt",
                  "cat-700.pt.optim", "cat-800.safetensors", "cat-900.png", "cat-.pt", "cat-1-best.pt"]:
        (folder / stray).write_bytes(b"")
    (folder / "images").mkdir()
    (folder / "images" / "cat-1000.pt").write_bytes(b"")
    assert _names(select_step_files(folder, 1)) == ["cat-100.pt", "cat-200.pt", "cat-best.pt"]


def test_a_run_whose_name_ends_in_a_dash_and_digits_keeps_its_own_files(make_run):
    folder = make_run("cat-1", [100, 2000])
    (folder / "cat-100.pt").write_bytes(b"")  # run "cat", step 100: not this run's
    assert _names(select_step_files(folder, 1)) == ["cat-1-100.pt", "cat-1-2000.pt"]
    assert step_of(folder / "cat-1-100.pt", "cat") is None
    assert step_of(folder / "cat-1-100.pt", "cat-1") == 100


def test_a_numbered_rerun_is_its_own_run(make_run):
    folder = make_run("cat_00001", [300])
    (folder / "cat-300.pt").write_bytes(b"")
    assert _names(select_step_files(folder, 1)) == ["cat_00001-300.pt"]


def test_a_name_with_regex_characters_is_taken_literally(make_run):
    folder = make_run("a+b (v2)", [10, 20])
    (folder / "aab (v2)-30.pt").write_bytes(b"")
    assert _names(select_step_files(folder, 1)) == ["a+b (v2)-10.pt", "a+b (v2)-20.pt"]


def test_a_missing_folder_is_refused_naming_the_input(tmp_path):
    with pytest.raises(InputError) as caught:
        select_step_files(tmp_path / "nowhere", 1, input_name="run_folder")
    assert caught.value.input_name == "run_folder" and "nowhere" in caught.value.message


def test_a_folder_without_step_files_is_refused_saying_what_it_looks_for(make_run):
    folder = make_run("dog", [], best=100)
    with pytest.raises(InputError) as caught:
        select_step_files(folder, 1)
    assert caught.value.input_name == "run" and "dog-STEP.pt" in caught.value.message


@pytest.mark.parametrize("every_nth", [0, -2, True, 1.5])
def test_every_nth_must_be_a_whole_number_of_at_least_one(make_run, every_nth):
    with pytest.raises(InputError) as caught:
        select_step_files(make_run("cat", [100]), every_nth)
    assert caught.value.input_name == "every_nth"


def test_a_final_file_later_than_every_step_file_is_the_last(make_run, network_file, tmp_path):
    folder = make_run("cat", [500, 1000], best=500)  # steps 1050, save_every 500: step 1050 is only in cat.pt
    final = network_file(tmp_path / "models" / "cat.pt", 1050)
    assert _names(select_step_files(folder, 1, final_file=final)) == ["cat-500.pt", "cat-1000.pt", "cat.pt",
                                                                      "cat-best.pt"]
    network_file(final, 1000)  # the final file is the last step file's network: not twice
    assert _names(select_step_files(folder, 1, final_file=final)) == ["cat-500.pt", "cat-1000.pt", "cat-best.pt"]
    assert _names(select_step_files(folder, 1, final_file=tmp_path / "models" / "missing.pt"))[-1] == "cat-best.pt"
