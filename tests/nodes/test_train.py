"""The Train Hypernet node, headless on the tiny model, run the way the executor runs it
(under torch.inference_mode, every input a list)."""
import dataclasses
from pathlib import Path

import pytest
import torch

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.tiny import build_tiny_components
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.config import TrainConfig
from hypernet_studio.nodes.train import TrainHypernetNode, train_config
from hypernet_studio.runtime import headless_host
from hypernet_studio.runtime.headless_host import HEADLESS


@pytest.fixture
def events():
    received = []
    saved = HEADLESS.event_sink
    HEADLESS.event_sink = lambda name, data: received.append((name, data))
    yield received
    HEADLESS.event_sink = saved
    HEADLESS.interrupt.clear()


def _widgets(**overrides):
    values = {name: spec[1]["default"] for name, spec in TrainHypernetNode.INPUT_TYPES()["required"].items()
              if isinstance(spec[1], dict) and "default" in spec[1]}
    values.update(name="tinynet", steps=4, learning_rate="0.001", resolution=64, save_every=2, preview_every=4,
                  preview_steps=2, csv_every=1, prompt_template="hypernetwork")
    values.update(overrides)
    return {key: [value] for key, value in values.items()}


def _run(images=None, captions=None, **kwargs):
    model, clip, vae = headless_objects(build_tiny_components(seed=0))
    generator = torch.Generator().manual_seed(0)
    images = images or [torch.rand(1, 64, 96, 3, generator=generator), torch.rand(2, 64, 64, 3, generator=generator)]
    captions = captions or ["red, square", "blue, circle", "green, dot"]
    inputs = dict(model=[model], clip=[clip], vae=[vae], images=images, captions=captions, unique_id=["7"])
    inputs.update(kwargs.pop("inputs", {}))
    with torch.inference_mode():
        return TrainHypernetNode().train(**inputs, **_widgets(**kwargs)), model


def test_input_contract():
    types = TrainHypernetNode.INPUT_TYPES()
    for group in ("required", "optional"):
        for name, (_, options) in types[group].items():
            assert options.get("tooltip"), name
            if "default" in options and "min" in options:
                assert options["min"] <= options["default"] <= options["max"], name
    assert types["required"]["learning_rate"][1]["default"] == "0.00001"
    assert len(TrainHypernetNode.RETURN_TYPES) == len(TrainHypernetNode.RETURN_NAMES) == 5


def test_every_widget_declares_its_train_config_fields_default():
    declared = TrainHypernetNode.INPUT_TYPES()
    widgets = {name: options for group in ("required", "optional") for name, (_, options) in declared[group].items()
               if "default" in options}
    field_defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)
                      if field.default is not dataclasses.MISSING}
    assert set(widgets) - set(field_defaults) == {"name"}, "every other widget is a TrainConfig field with a default"
    assert {"resolution", "aspect_buckets", "prompt_template", "custom_template"} <= set(widgets)
    for name in set(widgets) & set(field_defaults):
        assert widgets[name]["default"] == field_defaults[name], name


def test_the_config_holds_the_lines_of_the_chosen_template():
    custom = {key: value[0] for key, value in _widgets(prompt_template="custom",
                                                       custom_template=" [name], [filewords]\n\nby [name] ").items()}
    assert train_config(custom).templates == ["[name], [filewords]", "by [name]"]
    chosen_set = {key: value[0] for key, value in _widgets(prompt_template="subject").items()}
    assert train_config(chosen_set).templates[0] == "a photo of a [name]"


def test_trains_saves_and_reports_under_inference_mode(headless_dirs, events):
    output, model = _run(inputs={"hypernet_spec": [HypernetSpec(sizes=None, weight_init="XavierNormal")]})
    # One run: every output is a one-item list (previews: that run's previews), as the executor hands it on.
    (hypernetwork,), (curve,), previews, (path,), (val_loss,) = output["result"]
    assert hypernetwork.step == 4 and hypernetwork.sizes == model.attention_widths()
    assert path == str(headless_dirs / "models" / "hypernetworks" / "tinynet.pt")
    assert load_hypernetwork(path).step == 4
    log = headless_dirs / "output" / "hypernet_training" / "tinynet"
    assert sorted(p.name for p in log.glob("*.pt")) == ["tinynet-2.pt", "tinynet-4.pt"]
    assert (log / "tinynet-4.pt.optim").is_file() and (log / "images" / "tinynet-4.png").is_file()
    assert len((log / "hypernetwork_loss.csv").read_text().splitlines()) == 5
    assert curve.shape[0] == 1 and curve.shape[-1] == 3
    assert len(previews) == 1 and previews[0].shape[0] == 1 and min(previews[0].shape[1:3]) > 64, "64x64, labelled"
    steps = [data for name, data in events if name == "hypernet.train_step"]
    assert steps and steps[-1]["step"] == 4 and steps[-1]["node"] == "7"
    assert set(steps[-1]) == {"node", "step", "loss", "lr"} and steps[-1]["lr"] == pytest.approx(0.001)
    assert model.patches("attn2_patch") == []
    shown = output["ui"]["images"]
    assert shown == [{"filename": "loss_curve.png", "subfolder": "hypernet_training/tinynet", "type": "output"},
                     {"filename": "tinynet-4.png", "subfolder": "hypernet_training/tinynet/images", "type": "output"}]
    assert (log / "loss_curve.png").is_file()


def test_continuing_a_saved_network_resumes_from_its_step(headless_dirs, events):
    _run(inputs={"hypernet_spec": [HypernetSpec(sizes=None)]})
    saved = load_hypernetwork(headless_dirs / "output" / "hypernet_training" / "tinynet" / "tinynet-2.pt")
    output, _ = _run(steps=3, inputs={"hypernetwork": [saved]})
    assert output["result"][0][0].step == 3 and saved.step == 2


def test_an_interrupt_saves_then_raises_and_says_what_it_saved(headless_dirs, events):
    HEADLESS.interrupt.set()
    with pytest.raises(headless_host.InterruptedByUser):
        _run(save_every=0, inputs={"hypernet_spec": [HypernetSpec(sizes=None)]})
    final = headless_dirs / "models" / "hypernetworks" / "tinynet.pt"
    step_file = headless_dirs / "output" / "hypernet_training" / "tinynet" / "tinynet-1.pt"
    assert load_hypernetwork(final).step == 1 and step_file.with_suffix(".pt.optim").is_file()
    reports = [data["text"] for name, data in events if name == "progress_text"]
    assert reports[1:] == [f"interrupted at step 1; saved {step_file}, {final}"], "after the epoch figures"
    written = [data["path"] for name, data in events if name == "wrote"]
    assert str(step_file) in written and str(final) in written and f"{final}.optim" in written


def test_the_node_shows_pictures_images_per_step_and_epochs_before_training(headless_dirs, events):
    # 3 pictures, batch 1 x accumulation 1: 3 steps per epoch, so 4 steps are 1.33 epochs.
    output, _ = _run(preview_every=0, inputs={"hypernet_spec": [HypernetSpec(sizes=None)]})
    line = ("3 pictures; 1 image per step (batch 1 x accumulation 1); 3 steps per epoch; 4 steps = 1.33 epochs")
    names = [name for name, _ in events]
    shown = [data for name, data in events if name == "progress_text"]
    assert shown == [{"node": "7", "text": line}]
    assert names.index("progress_text") < names.index("hypernet.train_step"), "shown before the first step"
    assert line in output["ui"]["text"], "and kept in the node's text afterwards"


def test_a_rerun_never_replaces_the_earlier_results(headless_dirs, events):
    spec = {"hypernet_spec": [HypernetSpec(sizes=None)]}
    _run(steps=2, save_every=2, preview_every=0, inputs=spec)
    log = headless_dirs / "output" / "hypernet_training"
    first = {p: p.read_bytes() for p in [*log.rglob("*.*"), headless_dirs / "models" / "hypernetworks" / "tinynet.pt"]}
    again, _ = _run(steps=2, save_every=2, preview_every=0, inputs=spec)
    assert again["result"][3][0] == str(headless_dirs / "models" / "hypernetworks" / "tinynet_00001.pt")
    assert any("writes under 'tinynet_00001'" in line for line in again["ui"]["text"])
    assert (log / "tinynet_00001" / "tinynet_00001-2.pt").is_file()
    assert all(path.read_bytes() == data for path, data in first.items()), "the first run's files are untouched"
    replaced, _ = _run(steps=2, save_every=2, preview_every=0, inputs=spec, overwrite=True)
    assert replaced["result"][3][0] == str(headless_dirs / "models" / "hypernetworks" / "tinynet.pt")


def test_resuming_from_the_last_step_file_continues_the_same_run(headless_dirs, events):
    _run(steps=2, save_every=2, preview_every=0, inputs={"hypernet_spec": [HypernetSpec(sizes=None)]})
    log = headless_dirs / "output" / "hypernet_training" / "tinynet"
    resumed, _ = _run(steps=4, save_every=2, preview_every=0,
                      inputs={"hypernetwork": [load_hypernetwork(log / "tinynet-2.pt")]})
    assert resumed["result"][3][0] == str(headless_dirs / "models" / "hypernetworks" / "tinynet.pt")
    assert sorted(p.name for p in log.glob("*.pt")) == ["tinynet-2.pt", "tinynet-4.pt"]
    rows = (log / "hypernetwork_loss.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3", "4"]


def test_errors_name_the_node_and_input(headless_dirs, events, as_node_7):
    node = r"^node 7 \(HN_TrainHypernet\), "
    with pytest.raises(ValueError, match=node + r"input 'captions': got 2 captions for 3 images"):
        _run(captions=["a", "b"], inputs={"hypernet_spec": [HypernetSpec(sizes=None)]})
    with pytest.raises(ValueError, match=node + r"input 'hypernet_spec': connect"):
        _run()
    spec = {"hypernet_spec": [HypernetSpec(sizes=None)]}
    with pytest.raises(ValueError, match=node + r"input 'images': the dataset is empty"):
        _run(images=[torch.zeros(0, 64, 64, 3)], captions=[], inputs=spec)
    with pytest.raises(ValueError, match=node + r"input 'learning_rate': invalid learning_rate schedule 'abc'"):
        _run(learning_rate="abc", inputs=spec)
    with pytest.raises(ValueError, match=node + r"input 'clip_grad_value': invalid clip_grad_value schedule"):
        _run(clip_grad_mode="norm", clip_grad_value="x", inputs=spec)
    trained, _ = _run(steps=2, save_every=0, preview_every=0, inputs=spec)
    with pytest.raises(ValueError, match=node + r"input 'steps': the hypernetwork is already trained for 2 steps"):
        _run(steps=2, inputs={"hypernetwork": trained["result"][0]})
    with pytest.raises(ValueError, match=node + "input 'name'"):
        _run(name="../x", inputs={"hypernet_spec": [HypernetSpec(sizes=None)]})


def test_shipped_workflow_trains_and_samples_headless(headless_dirs, events):
    import time

    import numpy as np
    from PIL import Image

    from hypernet_studio.runtime.api import run_workflow_file

    folder = headless_dirs / "input" / "train_example"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, (colour, shape) in enumerate([("red", "square"), ("blue", "circle"), ("green", "square"),
                                             ("red", "circle")]):
        pixels = (rng.random((64 + 16 * (index % 2), 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index}.png")
        (folder / f"img{index}.txt").write_text(f"{colour}, {shape}")
    started = time.perf_counter()
    result = run_workflow_file(Path(__file__).resolve().parents[2] / "workflows" / "train_hypernet.json")
    elapsed = time.perf_counter() - started
    trained = load_hypernetwork(headless_dirs / "models" / "hypernetworks" / "example-hypernet.pt")
    assert trained.step == 40
    samples = [p for p in result.files if p.name.startswith("hypernet_trained_sample")]
    assert len(samples) == 1 and Image.open(samples[0]).size == (64, 64)
    log = headless_dirs / "output" / "hypernet_training" / "example-hypernet"
    assert sorted(p.name for p in log.glob("*.pt")) == ["example-hypernet-20.pt", "example-hypernet-40.pt"]
    assert elapsed < 120, elapsed
    # workflows/resume_training.json continues that run from its last step file up to step 60.
    resumed = run_workflow_file(Path(__file__).resolve().parents[2] / "workflows" / "resume_training.json")
    assert load_hypernetwork(headless_dirs / "models" / "hypernetworks" / "example-hypernet.pt").step == 60
    assert sorted(p.name for p in log.glob("*.pt")) == [f"example-hypernet-{s}.pt" for s in (20, 40, 60)]
    rows = (log / "hypernetwork_loss.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(5, 61, 5)), "the CSV continues, no row twice"
    assert any(p.name.startswith("hypernet_resumed_sample") for p in resumed.files)


def test_the_validation_workflow_reports_validation_loss_and_a_preview_grid(headless_dirs):
    import csv
    import math

    from PIL import Image

    from hypernet_studio.hypernet.image_grid import grid_layout
    from hypernet_studio.runtime.api import run_workflow_file
    from hypernet_studio.runtime.examples import write_examples

    write_examples(headless_dirs)
    workflow = Path(__file__).resolve().parents[2] / "workflows" / "train_hypernet_validation.json"
    live = []
    result = run_workflow_file(workflow, {"4.steps": 20}, event_callback=lambda name, data: live.append((name, data)))
    log = headless_dirs / "output" / "hypernet_training" / "example-validated"
    with (log / "hypernetwork_loss.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows if r["val_loss"]] == ["10", "20"]
    val_loss = result.outputs["4"][4][0]
    assert math.isfinite(val_loss) and abs(val_loss - float(rows[-1]["val_loss"])) < 1e-6
    assert (log / "example-validated-best.pt").is_file()
    labels = (["a picture of red, square", "a picture of blue, circle"], ["seed 1", "seed 2"])
    layout = grid_layout(*labels, 64, 64)
    assert Image.open(log / "images" / "example-validated-20.png").size == (layout.width, layout.height), \
        "2 prompts x 2 seeds of 64x64, labelled"
    assert any(line.startswith("validation loss") for line in result.ui["4"]["text"])
    validations = [data for name, data in live if name == "hypernet.train_step" and "val_loss" in data]
    assert [d["step"] for d in validations] == [10, 20], "the live chart gets each validation"
