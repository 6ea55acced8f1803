"""The `hypernet-studio` CLI: exit codes 0/1/2/130 and the messages that go with them."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hypernet_studio.hypernet.files import atomic_write_bytes
from hypernet_studio.nodes.host import HOST
from hypernet_studio.runtime import cli, headless_host
from hypernet_studio.runtime.headless_host import HEADLESS


class SaveText:
    """Writes its value to output/<prefix>.txt and reports it like SaveImage does."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {}), "prefix": ("STRING", {"default": "out"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    def save(self, value, prefix):
        path = HOST.output_directory() / f"{prefix}.txt"
        atomic_write_bytes(path, str(value).encode())
        return {"ui": {"images": [{"filename": path.name, "subfolder": "", "type": "output"}]}}


@pytest.fixture
def cli_env(registry, monkeypatch, tmp_path):
    """The CLI with the fake registry, and headless settings restored afterwards."""
    registry["SaveText"] = SaveText
    monkeypatch.setattr(cli, "_registry", lambda: registry)
    saved = {k: getattr(HEADLESS, k) for k in
             ("base_dir", "input_dir", "output_dir", "temp_dir", "models_dir", "device")}
    yield tmp_path
    for key, value in saved.items():
        setattr(HEADLESS, key, value)


def _write(tmp_path, prompt, name="wf.json"):
    path = tmp_path / name
    path.write_text(json.dumps(prompt))
    return path


def _prompt(value=3, prefix="result"):
    return {"1": {"class_type": "Const", "inputs": {"value": value, "seed": 0}},
            "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
            "3": {"class_type": "SaveText", "inputs": {"value": ["2", 0], "prefix": prefix}}}


def test_run_writes_outputs_under_base_dir_and_applies_set(cli_env, capsys):
    path = _write(cli_env, _prompt())
    code = cli.main(["run", str(path), "--base-dir", str(cli_env), "--set", "1.value=10", "--set", "3.prefix=x"])
    out, err = capsys.readouterr()
    assert code == 0, err
    written = cli_env / "output" / "x.txt"
    assert written.read_text() == "11"
    assert f"wrote {written}" in out
    assert "#2 Add" in err  # per-node progress lines


def test_run_with_separate_output_dir(cli_env, capsys, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    path = _write(cli_env, _prompt())
    assert cli.main(["run", str(path), "--base-dir", str(cli_env), "--output-dir", str(elsewhere), "--quiet"]) == 0
    assert (elsewhere / "result.txt").read_text() == "4"


def test_run_validation_error_exits_2_naming_node_class_input(cli_env, capsys):
    path = _write(cli_env, _prompt(value=1000))
    assert cli.main(["run", str(path), "--base-dir", str(cli_env)]) == 2
    err = capsys.readouterr().err
    assert "node 1 (Const), input 'value'" in err and "value_bigger_than_max" in err
    assert not (cli_env / "output" / "result.txt").exists()


def test_run_unknown_node_and_missing_link_exit_2(cli_env, capsys):
    prompt = _prompt()
    prompt["2"]["class_type"] = "Ad"
    prompt["3"]["inputs"]["value"] = ["9", 0]
    assert cli.main(["run", str(_write(cli_env, prompt)), "--base-dir", str(cli_env)]) == 2
    err = capsys.readouterr().err
    assert "unknown node type 'Ad'" in err and "did you mean Add" in err
    assert "node 3 (SaveText), input 'value': linked to node 9, which does not exist" in err


def test_run_malformed_json_and_missing_file_exit_2(cli_env, capsys):
    path = cli_env / "bad.json"
    path.write_text('{"1": {"class_type": "Const",,}}')
    assert cli.main(["run", str(path), "--base-dir", str(cli_env)]) == 2
    assert f"{path}: invalid JSON at line 1, column" in capsys.readouterr().err
    assert cli.main(["run", str(cli_env / "missing.json")]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err


def test_run_bad_set_exits_2(cli_env, capsys):
    path = _write(cli_env, _prompt())
    assert cli.main(["run", str(path), "--base-dir", str(cli_env), "--set", "1.colour=3"]) == 2
    assert "node 1 (Const) has no input 'colour'" in capsys.readouterr().err


def test_run_execution_error_exits_1_with_node_message(cli_env, capsys):
    prompt = _prompt()
    prompt["2"] = {"class_type": "Fail", "inputs": {"value": ["1", 0]}}
    assert cli.main(["run", str(_write(cli_env, prompt)), "--base-dir", str(cli_env)]) == 1
    assert "node 2 (Fail) failed: ValueError: cannot handle 3" in capsys.readouterr().err


def test_run_interrupt_exits_130_and_later_nodes_do_not_run(cli_env, capsys, calls):
    prompt = _prompt()
    prompt["2"] = {"class_type": "Interrupter", "inputs": {"value": ["1", 0]}}
    assert cli.main(["run", str(_write(cli_env, prompt)), "--base-dir", str(cli_env)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (cli_env / "output" / "result.txt").exists()
    assert "Interrupter.after" not in [name for name, _ in calls]


def test_sigterm_stops_the_run_like_ctrl_c(cli_env, capsys, calls):
    prompt = _prompt()
    prompt["2"] = {"class_type": "Terminated", "inputs": {"value": ["1", 0]}}
    assert cli.main(["run", str(_write(cli_env, prompt)), "--base-dir", str(cli_env)]) == 130
    assert "interrupt requested" in capsys.readouterr().err
    assert "Terminated.after" not in [name for name, _ in calls]


def test_under_torchrun_a_repeated_signal_does_not_abort_and_only_rank_0_speaks(monkeypatch, capsys):
    """torchrun passes a Ctrl-C on to its processes, which got the terminal's own copy too; it
    kills processes that do not stop in time itself."""
    for rank in (0, 1):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        settings = headless_host.HeadlessHost()
        handle = cli._interrupt_handler(settings)
        handle(2, None)
        handle(15, None)
        assert settings.interrupt.is_set()
        assert ("interrupt requested" in capsys.readouterr().err) == (rank == 0)


def test_ctrl_c_handler_requests_then_aborts():
    settings = headless_host.HeadlessHost()
    handle = cli._interrupt_handler(settings)
    handle(2, None)
    assert settings.interrupt.is_set()
    with pytest.raises(KeyboardInterrupt):
        handle(2, None)


def test_validate_and_convert(cli_env, capsys, load_fixture):
    ui_path = _write(cli_env, load_fixture("ui_routing.json"), "ui.json")
    assert cli.main(["validate", str(ui_path)]) == 0
    assert "OK" in capsys.readouterr().out

    assert cli.main(["convert", str(ui_path)]) == 0
    converted = json.loads(capsys.readouterr().out)
    assert converted["3"]["inputs"] == {"a": ["1", 0], "b": 40}

    target = cli_env / "api" / "routing.json"
    assert cli.main(["convert", str(ui_path), "-o", str(target)]) == 0
    assert json.loads(target.read_text()) == converted
    assert [p.name for p in target.parent.iterdir()] == ["routing.json"]  # no temp file left behind

    bad = _write(cli_env, _prompt(value=-5), "bad.json")
    assert cli.main(["validate", str(bad)]) == 2
    assert "value_smaller_than_min" in capsys.readouterr().err


def test_nodes_lists_inputs_types_and_defaults(cli_env, capsys):
    assert cli.main(["nodes", "--json"]) == 0
    listing = {entry["class_type"]: entry for entry in json.loads(capsys.readouterr().out)}
    value = next(i for i in listing["Const"]["inputs"] if i["name"] == "value")
    assert value == {"name": "value", "type": "INT", "required": True, "default": 1, "min": 0, "max": 100}
    assert listing["Text"]["inputs"][1]["options"] == ["plain", "upper"]
    assert listing["SaveText"]["output_node"] is True
    assert cli.main(["nodes"]) == 0
    assert "Const" in capsys.readouterr().out


def test_console_module_exit_code_in_a_real_process(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    result = subprocess.run([sys.executable, "-m", "hypernet_studio.runtime", "validate", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "invalid JSON at line 1, column 2" in result.stderr


def test_txt2img_workflow_end_to_end_on_the_tiny_model(tmp_path, capsys):
    """The shipped UI workflow, unchanged, through the real registry (stand-ins + tiny-sd)."""
    from PIL import Image

    workflow = Path(__file__).resolve().parents[2] / "workflows" / "txt2img.json"
    saved = {k: getattr(HEADLESS, k) for k in
             ("base_dir", "input_dir", "output_dir", "temp_dir", "models_dir", "device")}
    try:
        code = cli.main(["run", str(workflow), "--base-dir", str(tmp_path), "--device", "cpu",
                         "--set", "3.steps=2", "--set", "9.filename_prefix=e2e"])
    finally:
        for key, value in saved.items():
            setattr(HEADLESS, key, value)
    out, err = capsys.readouterr()
    assert code == 0, err
    images = sorted((tmp_path / "output").glob("e2e*.png"))
    assert len(images) == 1 and f"wrote {images[0]}" in out
    with Image.open(images[0]) as image:
        assert image.size == (64, 64)
        embedded_prompt = json.loads(image.text["prompt"])
        embedded_workflow = json.loads(image.text["workflow"])
    assert embedded_prompt["3"]["inputs"]["steps"] == 2  # the --set value is what ran
    assert embedded_workflow["nodes"] == json.loads(workflow.read_text())["nodes"]


def test_convert_hypernet_delegates_and_reports_bad_input(tmp_path, capsys):
    import torch

    from hypernet_studio.hypernet.file_format import load_hypernetwork
    from hypernet_studio.runtime.examples import make_random_hypernetwork

    source = make_random_hypernetwork(tmp_path / "style.pt", sizes=[32, 48], seed=3)
    target = tmp_path / "style.safetensors"
    assert cli.main(["convert-hypernet", str(source), str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    original, converted = load_hypernetwork(source), load_hypernetwork(target)
    assert sorted(original.layers) == sorted(converted.layers) == [32, 48]
    for width in (32, 48):
        for a, b in zip(original.layers[width], converted.layers[width]):
            for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
                assert torch.equal(p, q), (width, name)

    assert cli.main(["convert-hypernet", str(source), str(target)]) == 2
    assert "exists; add --overwrite" in capsys.readouterr().err
    assert cli.main(["convert-hypernet", str(source), str(tmp_path / "style.bin")]) == 2
    assert ".safetensors" in capsys.readouterr().err and not (tmp_path / "style.bin").exists()
    assert cli.main(["convert-hypernet", str(source), str(target), "--overwrite"]) == 0
    not_a_hypernet = tmp_path / "notes.pt"
    torch.save({"hello": torch.zeros(2)}, not_a_hypernet)
    assert cli.main(["convert-hypernet", str(not_a_hypernet), str(tmp_path / "x.safetensors")]) == 2
    assert "notes.pt" in capsys.readouterr().err
    assert cli.main(["convert-hypernet", str(tmp_path / "missing.pt"), str(tmp_path / "y.pt")]) == 2


def test_validate_finds_model_files_under_base_dir(headless_dirs, monkeypatch, capsys):
    from hypernet_studio.runtime.examples import make_random_hypernetwork

    base = headless_dirs / "studio"
    make_random_hypernetwork(base / "models" / "hypernetworks" / "style.pt", sizes=[8], seed=0)
    workflow = _write(headless_dirs, {
        "1": {"class_type": "HN_LoadHypernet", "inputs": {"hypernetwork_name": "style.pt"}},
        "2": {"class_type": "HN_SaveHypernet", "inputs": {"hypernetwork": ["1", 0], "filename": "copy",
                                                         "format": "pt", "overwrite": False}}})
    monkeypatch.delenv("HYPERNET_STUDIO_HOME", raising=False)
    monkeypatch.chdir(headless_dirs)  # no models/ here: the file is only found through --base-dir
    assert cli.main(["validate", str(workflow)]) == 2
    assert "node 1 (HN_LoadHypernet), input 'hypernetwork_name'" in capsys.readouterr().err
    assert cli.main(["validate", str(workflow), "--base-dir", str(base)]) == 0
    assert cli.main(["validate", str(workflow), "--models-dir", str(base / "models")]) == 0


def test_run_on_cuda_without_cuda_is_an_invalid_argument(cli_env, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_cuda_available", lambda: False)
    workflow = _write(cli_env, _prompt())
    assert cli.main(["run", str(workflow), "--device", "cuda", "--base-dir", str(cli_env)]) == 2
    assert "--device cuda" in capsys.readouterr().err
    assert not (cli_env / "output").exists()


def test_convert_refuses_to_drop_widget_values_of_unknown_nodes(cli_env, capsys, load_fixture):
    workflow = load_fixture("ui_routing.json")
    node = next(n for n in workflow["nodes"] if n.get("widgets_values") and n["type"] not in
                ("Note", "MarkdownNote", "Reroute", "PrimitiveNode") and n.get("mode", 0) == 0)
    node["type"] = "NodeFromAnotherPack"
    path = _write(cli_env, workflow, "other.json")
    target = cli_env / "api.json"
    assert cli.main(["convert", str(path), "-o", str(target)]) == 2
    assert f"node {node['id']} (NodeFromAnotherPack)" in capsys.readouterr().err
    assert not target.exists()


def test_convert_refuses_unknown_nodes_without_widget_values(cli_env, capsys, load_fixture):
    workflow = load_fixture("ui_routing.json")
    node = next(n for n in workflow["nodes"] if n["type"] == "Add" and n.get("mode", 0) == 0)
    node["type"], node["widgets_values"] = "NodeFromAnotherPack", []
    target = cli_env / "api.json"
    assert cli.main(["convert", str(_write(cli_env, workflow, "other.json")), "-o", str(target)]) == 2
    assert f"node {node['id']} (NodeFromAnotherPack)" in capsys.readouterr().err
    api = _write(cli_env, {"1": {"class_type": "Mystery", "inputs": {}}}, "api_in.json")
    assert cli.main(["convert", str(api)]) == 2
    assert "node 1 (Mystery)" in capsys.readouterr().err and not target.exists()


def test_nodes_lists_every_option(capsys):
    assert cli.main(["nodes"]) == 0
    listing = capsys.readouterr().out
    assert "..." not in listing and "…" not in listing
    assert "'stretch'" in listing, "Auto Crop's sixth method is listed"


def test_run_prints_text_outputs_of_output_nodes(headless_dirs, capsys):
    from hypernet_studio.runtime.examples import make_random_hypernetwork

    make_random_hypernetwork(headless_dirs / "models" / "hypernetworks" / "style.pt", sizes=[8], seed=0)
    workflow = _write(headless_dirs, {
        "1": {"class_type": "HN_LoadHypernet", "inputs": {"hypernetwork_name": "style.pt"}},
        "2": {"class_type": "HN_SaveHypernet", "inputs": {"hypernetwork": ["1", 0], "filename": "copy",
                                                         "format": "safetensors", "overwrite": False}}})
    assert cli.main(["run", str(workflow), "--base-dir", str(headless_dirs), "--quiet"]) == 0
    saved = headless_dirs / "models" / "hypernetworks" / "copy.safetensors"
    assert saved.is_file() and f"#2 HN_SaveHypernet: {saved}" in capsys.readouterr().out


class ChattyAdd:
    """A non-output node that returns a ui text (like a tagger's per-image tags)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "add"

    def add(self, value):
        return {"ui": {"text": ["chatter"]}, "result": (value + 1,)}


def test_run_prints_no_text_of_intermediate_nodes(cli_env, registry, capsys):
    registry["ChattyAdd"] = ChattyAdd
    prompt = {"1": {"class_type": "ChattyAdd", "inputs": {"value": 1}},
              "2": {"class_type": "SaveText", "inputs": {"value": ["1", 0], "prefix": "out"}}}
    assert cli.main(["run", str(_write(cli_env, prompt)), "--base-dir", str(cli_env), "--quiet"]) == 0
    assert "chatter" not in capsys.readouterr().out


def test_run_says_every_file_it_wrote_and_leaves_no_previews(tmp_path, capsys):
    from hypernet_studio.runtime.examples import write_examples

    write_examples(tmp_path)
    workflow = Path(__file__).resolve().parents[2] / "workflows" / "train_hypernet.json"
    overrides = ["--set", "4.steps=4", "--set", "4.save_every=2", "--set", "4.preview_every=4",
                 "--set", "4.csv_every=2", "--set", "9.steps=1"]
    assert cli.main(["run", str(workflow), "--base-dir", str(tmp_path), "--quiet", *overrides]) == 0
    wrote = {Path(line[len("wrote "):]) for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")}
    log = tmp_path / "output" / "hypernet_training" / "example-hypernet"
    final = tmp_path / "models" / "hypernetworks" / "example-hypernet.pt"
    expected = {log / "example-hypernet-2.pt", log / "example-hypernet-2.pt.optim", log / "example-hypernet-4.pt",
                log / "example-hypernet-4.pt.optim", final, Path(f"{final}.optim"), log / "hypernetwork_loss.csv",
                log / "loss_curve.png", log / "images" / "example-hypernet-4.png"}
    assert expected <= wrote, expected - wrote
    assert any(p.name.startswith("hypernet_trained_sample") for p in wrote)
    assert all(p.is_file() for p in wrote)
    temp = tmp_path / "temp"
    assert not temp.exists() or not any(temp.rglob("*.png")), "previews are removed when the run ends"


def test_version_prints_the_version_in_pyproject(capsys):
    import re

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"hypernet-studio {version}"


def test_train_workflow_prints_pictures_images_per_step_and_epochs_when_training_starts(tmp_path, capsys):
    """Issue 18: the CLI prints Train Hypernet's epoch figures before the first step (the node's line)."""
    from hypernet_studio.runtime.examples import write_examples

    workflow = Path(__file__).resolve().parents[2] / "workflows" / "train_hypernet.json"
    saved = {k: getattr(HEADLESS, k) for k in
             ("base_dir", "input_dir", "output_dir", "temp_dir", "models_dir", "device")}
    write_examples(tmp_path)
    try:
        code = cli.main(["run", str(workflow), "--base-dir", str(tmp_path), "--device", "cpu",
                         "--set", "4.steps=4", "--set", "4.batch_size=1", "--set", "4.gradient_accumulation=2",
                         "--set", "4.validation_split=0.25", "--set", "4.save_every=0", "--set", "4.preview_every=0",
                         "--set", "9.steps=1"])
    finally:
        for key, value in saved.items():
            setattr(HEADLESS, key, value)
    out, err = capsys.readouterr()
    assert code == 0, err
    # The example set's 4 pictures, 1 held out: 3 batches of 1, cut to 2 for the accumulation -> 1 step per epoch.
    line = ("3 pictures (1 held out for validation); 2 images per step (batch 1 x accumulation 2); "
            "1 step per epoch; 4 steps = 4 epochs")
    lines = err.splitlines()
    started = lines.index("[4] #4 HN_TrainHypernet ...")
    assert lines[started + 1] == f"    {line}", "printed when training starts, before the node finishes"
    assert f"#4 HN_TrainHypernet: {line}" in out.splitlines(), "and in the node's text at the end"
