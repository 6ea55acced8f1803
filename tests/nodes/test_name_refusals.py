"""Issue 17: names no file system takes, and names leading out of their folder, are refused at
validation with the input named (they were a raw "embedded null byte", a raw OSError at run time,
and an UnsafePathError naming no input)."""
import os

import pytest

from hypernet_studio.nodes import dataset, model, train

LONG = "a" * 300


def _train_verdict(name):
    # images and captions linked, as ComfyUI passes linked sockets: [None] (their values come later)
    return train.TrainHypernetNode.VALIDATE_INPUTS(name, "0.001", "norm", "1", "hypernetwork", "", "AdamW",
                                                   images=[None], captions=[None])


def _save_verdict(filename):
    return model.SaveHypernetNode.VALIDATE_INPUTS(filename=filename)


@pytest.mark.parametrize("check,input_name", [
    (_train_verdict, "name"), (_save_verdict, "filename"),
    (model.LoadHypernetNode.VALIDATE_INPUTS, "hypernetwork_name"),
    (lambda text: dataset.LoadImagesNode.VALIDATE_INPUTS(text, "white"), "folder")])
def test_a_nul_byte_and_an_over_long_name_are_refused_naming_the_input(headless_dirs, check, input_name):
    verdict = check("a\0b")
    assert verdict.startswith(f"input '{input_name}': ") and "NUL character" in verdict
    verdict = check(LONG)
    assert verdict.startswith(f"input '{input_name}': ") and "characters long; a file name can be at most" in verdict


def test_a_training_name_leaves_room_for_the_longest_file_a_run_writes(headless_dirs):
    assert _train_verdict("a" * 231) is True
    assert "at most 231" in _train_verdict("a" * 232)


@pytest.mark.skipif(os.name == "nt", reason="creating symlinks needs a privilege on Windows")
def test_a_name_whose_file_is_a_link_out_of_the_folder_is_refused_naming_the_input(headless_dirs, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "x.pt"
    outside.write_bytes(b"x")
    (headless_dirs / "models" / "hypernetworks").mkdir(parents=True, exist_ok=True)
    os.symlink(outside, headless_dirs / "models" / "hypernetworks" / "link.pt")
    verdict = _train_verdict("link")
    assert verdict.startswith("input 'name': ") and "escapes" in verdict
    assert _save_verdict("link").startswith("input 'filename': ")


@pytest.mark.skipif(os.name == "nt", reason="creating symlinks needs a privilege on Windows")
def test_at_run_time_a_link_out_of_the_folder_is_an_input_error_for_name(tmp_path):
    from hypernet_studio.hypernet.errors import InputError
    from hypernet_studio.hypernet.network import Hypernetwork
    from hypernet_studio.hypernet.spec import HypernetSpec
    from hypernet_studio.hypernet.train.config import TrainConfig
    from hypernet_studio.hypernet.train.run_files import RunFolders
    from hypernet_studio.hypernet.train.session import _with_run_files

    (tmp_path / "models").mkdir()
    os.symlink(tmp_path / "elsewhere.pt", tmp_path / "models" / "link.pt")
    network = Hypernetwork.build(HypernetSpec(sizes=[8]), sizes=[8], seed=0, name="link")
    with pytest.raises(InputError) as caught:
        _with_run_files(TrainConfig(name="link"), RunFolders(tmp_path / "models", tmp_path / "log"), network)
    assert caught.value.input_name == "name"


def test_load_hypernet_lists_step_files_in_natural_order(headless_dirs):
    folder = headless_dirs / "models" / "hypernetworks" / "run"
    folder.mkdir(parents=True)
    for step in (10, 5, 15):
        (folder / f"run-{step}.pt").write_bytes(b"x")
    choices = model.LoadHypernetNode.INPUT_TYPES()["required"]["hypernetwork_name"][0]
    assert choices == ["run/run-5.pt", "run/run-10.pt", "run/run-15.pt"]
