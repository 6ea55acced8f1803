"""Every input that can be checked without running is refused by `validate` and `run` (exit 2)
before a checkpoint loads or an image is read, with the node and the input named."""
import json
from pathlib import Path

import pytest

from hypernet_studio.runtime import cli
from hypernet_studio.runtime.examples import write_examples

TRAIN = Path(__file__).resolve().parents[2] / "workflows" / "train_hypernet.json"


@pytest.fixture
def studio(tmp_path, monkeypatch):
    """A base folder with the example inputs, and loaders that record every call."""
    from hypernet_studio.hypernet.preprocess import pipeline
    from hypernet_studio.hypernet.sd import loading

    write_examples(tmp_path)
    calls = []
    monkeypatch.setattr(loading, "load_components", lambda *a, **k: calls.append(("checkpoint", a)))
    monkeypatch.setattr(pipeline, "load_folder_lists", lambda *a, **k: calls.append(("images", a)))
    return tmp_path, calls


CASES = [
    (["4.learning_rate=abc"], "node 4 (HN_TrainHypernet), input 'learning_rate'"),
    (["4.learning_rate=-1"], "node 4 (HN_TrainHypernet), input 'learning_rate'"),
    (["4.learning_rate=0.001:10, -0.5"], "not a positive number"),
    (["4.name=../../evil"], "node 4 (HN_TrainHypernet), input 'name'"),
    (["4.clip_grad_value=x"], "node 4 (HN_TrainHypernet), input 'clip_grad_value'"),
    (["4.prompt_template=custom", "4.custom_template="], "input 'custom_template'"),
    (["4.steps=2.5"], "node 4 (HN_TrainHypernet), input 'steps'"),
    (["4.optimizer_args=betas=0.9 foo=1"], "node 4 (HN_TrainHypernet), input 'optimizer_args'"),
    (["4.optimizer=SGD", "4.optimizer_args=betas=0.9,0.99"], "input 'optimizer_args': 'betas'"),
    (["4.optimizer=Lion"], "node 4 (HN_TrainHypernet), input 'optimizer'"),
    (["3.layer_structure=2, 1"], "node 3 (HN_HypernetSpec), input 'layer_structure'"),
    (["3.use_dropout=true", "3.dropout_structure=0, 0.1"], "node 3 (HN_HypernetSpec), input 'dropout_structure'"),
    (["3.target_family=custom", "3.custom_sizes=12.5"], "node 3 (HN_HypernetSpec), input 'custom_sizes'"),
    (["2.folder=no_such_folder"], "hypernet-studio examples"),
    (["2.background=not-a-colour"], "node 2 (HN_LoadImages), input 'background'"),
    (["2.folder=."], "node 2 (HN_LoadImages), input 'recursive': "),
    (['4.name="a\\u0000b"'], "node 4 (HN_TrainHypernet), input 'name': 'a\\x00b' holds a NUL character"),
    (["4.name=" + "a" * 300], "node 4 (HN_TrainHypernet), input 'name': 'aaaaaaaaaaaaaaaaaaaaaaaa'... is 300"),
    (["1.ckpt_name=missing.safetensors"], "node 1 (CheckpointLoaderSimple), input 'ckpt_name'"),
]


@pytest.mark.parametrize("overrides,expected", CASES, ids=[c[0][0] for c in CASES])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_inputs_exit_2_before_any_work(studio, capsys, command, overrides, expected):
    base, calls = studio
    arguments = [command, str(TRAIN), "--base-dir", str(base)]
    for override in overrides:
        arguments += ["--set", override]
    assert cli.main(arguments) == 2
    assert expected in capsys.readouterr().err
    assert calls == [], "nothing was loaded"


def test_a_malformed_safetensors_checkpoint_is_refused_at_validation(studio, capsys):
    base, calls = studio
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "broken.safetensors").write_bytes(b"\xff" * 64)
    assert cli.main(["validate", str(TRAIN), "--base-dir", str(base), "--set", "1.ckpt_name=broken.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "input 'ckpt_name'" in err and "broken.safetensors" in err and "not a valid safetensors" in err
    assert calls == []


def test_save_hypernet_refuses_a_name_outside_its_folder(studio, capsys):
    base, _ = studio
    prompt = {"1": {"class_type": "HN_LoadHypernet", "inputs": {"hypernetwork_name": "tiny_example.pt"}},
              "2": {"class_type": "HN_SaveHypernet", "inputs": {"hypernetwork": ["1", 0], "filename": "../../evil",
                                                               "format": "pt", "overwrite": False}}}
    path = base / "save.json"
    path.write_text(json.dumps(prompt))
    assert cli.main(["validate", str(path), "--base-dir", str(base)]) == 2
    assert "node 2 (HN_SaveHypernet), input 'filename'" in capsys.readouterr().err
    assert not (base.parent / "evil.pt").exists()


def test_the_shipped_workflow_itself_validates(studio, capsys):
    base, calls = studio
    assert cli.main(["validate", str(TRAIN), "--base-dir", str(base)]) == 0
    assert calls == []


MAX_SIDE_CASES = [("-1", "0 (keep full size)"), ("32", "at least 64"), ("99999", "at most"),
                  ("2.5", "whole number")]


@pytest.mark.parametrize("value,reason", MAX_SIDE_CASES, ids=[c[0] for c in MAX_SIDE_CASES])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_bad_max_side_exits_2_before_any_work(studio, capsys, command, value, reason):
    base, calls = studio
    assert cli.main([command, str(TRAIN), "--base-dir", str(base), "--set", f"2.max_side={value}"]) == 2
    err = capsys.readouterr().err
    assert "node 2 (HN_LoadImages), input 'max_side'" in err and reason in err
    assert calls == [], "nothing was loaded"


def test_max_side_zero_or_a_size_validates(studio):
    base, calls = studio
    for value in ("0", "64", "2048"):
        assert cli.main(["validate", str(TRAIN), "--base-dir", str(base), "--set", f"2.max_side={value}"]) == 0
    assert calls == []


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_steps_at_or_below_the_resumed_files_step_exit_2_before_any_work(studio, capsys, command, suffix):
    """Issue 17: read from the file's metadata at validation, not after the checkpoint has loaded."""
    from hypernet_studio.hypernet.file_format import load_hypernetwork, save_hypernetwork
    from hypernet_studio.runtime.examples import make_random_hypernetwork

    base, calls = studio
    folder = base / "models" / "hypernetworks" / "example-hypernet"
    network = load_hypernetwork(make_random_hypernetwork(folder / "seed.pt", sizes=[8]))
    network.step = 40
    save_hypernetwork(network, folder / f"example-hypernet-40{suffix}")
    resume = TRAIN.with_name("resume_training.json")
    arguments = [command, str(resume), "--base-dir", str(base), "--set",
                 f"3.hypernetwork_name=example-hypernet/example-hypernet-40{suffix}"]
    for steps in (40, 12):
        assert cli.main([*arguments, "--set", f"4.steps={steps}"]) == 2
        err = capsys.readouterr().err
        assert "node 4 (HN_TrainHypernet), input 'steps'" in err and "already trained for 40 steps" in err, err
    assert calls == [], "nothing was loaded"
    assert cli.main(["validate", *arguments[1:], "--set", "4.steps=41"]) == 0
