"""Spec sweeps: Hypernet Spec Grid expands lists into specs, Train Hypernet trains one network per
spec (NAME-<spec>, own folder, the pictures encoded once), and every run writes run_summary.json."""
import json
import math
from pathlib import Path

import pytest

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
from hypernet_studio.hypernet.train.config import TrainingDiverged
from hypernet_studio.hypernet.train.sweep import MAX_SWEEP_SPECS, short_spec, sweep_names
from hypernet_studio.nodes.model import GRID_INPUTS, HypernetSpecGridNode
from hypernet_studio.runtime import headless_host
from hypernet_studio.runtime.executor import Executor
from hypernet_studio.runtime.headless_host import HEADLESS

from .test_train import _run

REPO_ROOT = Path(__file__).resolve().parents[2]
GRID_DEFAULTS = {name: spec[1]["default"] for name, spec in GRID_INPUTS.items()}
SUMMARY_KEYS = ["spec", "parameters", "steps", "final_loss", "best_val_loss", "best_val_step", "seconds_per_step"]


@pytest.fixture
def events():
    received = []
    saved = HEADLESS.event_sink
    HEADLESS.event_sink = lambda name, data: received.append((name, data))
    yield received
    HEADLESS.event_sink = saved
    HEADLESS.interrupt.clear()


def _grid(**widgets):
    return HypernetSpecGridNode().make_specs(**{**GRID_DEFAULTS, **widgets})


def _check(**widgets):
    values = {**GRID_DEFAULTS, **widgets}
    return HypernetSpecGridNode.VALIDATE_INPUTS(values["target_family"], values["custom_sizes"],
                                                values["layer_structures"], values["activations"],
                                                values["layer_norm"], values["dropout_structures"])


def test_the_grid_makes_every_combination_structure_by_structure():
    specs = _grid(layer_structures="1, 2, 1\n\n1, 2, 2, 1", activations="relu, swish", layer_norm="both",
                  dropout_structures="none\n0, 0.1, 0", init_seed=5)["result"][0]
    assert [short_spec(s) for s in specs] == [
        "1,2,1 relu", "1,2,1 relu dropout 0,0.1,0", "1,2,1 relu ln", "1,2,1 relu ln dropout 0,0.1,0",
        "1,2,1 swish", "1,2,1 swish dropout 0,0.1,0", "1,2,1 swish ln", "1,2,1 swish ln dropout 0,0.1,0",
        "1,2,2,1 relu", "1,2,2,1 relu ln", "1,2,2,1 swish", "1,2,2,1 swish ln"]
    assert all(s.sizes is None and s.init_seed == 5 for s in specs), "the other settings as on Hypernet Spec"
    text = _grid()["ui"]["text"]
    assert text[0].startswith("6 specs") and text[1].startswith("1,2,1 relu: ") and "parameters" in text[1]


@pytest.mark.parametrize("widgets, message", [
    ({"layer_structures": "1, 2, 1\n1, 3"}, "input 'layer_structures': line 2 ('1, 3'): must start and end with 1"),
    ({"layer_structures": "1, 2, 1\n1,2,1"}, "input 'layer_structures': line 2 ('1,2,1') repeats line 1"),
    ({"layer_structures": " \n"}, "input 'layer_structures': give at least one"),
    ({"activations": "relu, nope"}, "input 'activations': unknown activation 'nope'"),
    ({"layer_norm": "sometimes"}, "input 'layer_norm'"),
    ({"dropout_structures": "0, 0.1, 0\nabc"}, "input 'dropout_structures': line 2 ('abc'): give numbers"),
    ({"layer_structures": "1, 2, 2, 1", "dropout_structures": "0, 0.1, 0"},
     "input 'dropout_structures': no line fits layer structure line 1 ('1, 2, 2, 1'): add one with 4 numbers"),
    ({"layer_structures": "1, 2, 1", "dropout_structures": "none\n0, 0.1, 0.1, 0"},
     "input 'dropout_structures': line 2 ('0, 0.1, 0.1, 0') fits no layer structure"),
    ({"layer_structures": "1, 2, 1", "dropout_structures": "none\nlegacy"}, "two lines make the same spec"),
    ({"layer_structures": "1,2,1\n1,3,1\n1,4,1", "activations": "relu, elu, swish", "layer_norm": "both"},
     "the grid makes 18 specs (3 layer structures x 3 activations x layer norm both x dropout lines); a sweep "
     f"trains at most {MAX_SWEEP_SPECS} networks in one queue"),
])
def test_bad_grid_lines_are_refused_at_queue_time_naming_input_and_line(widgets, message):
    answer = _check(**widgets)
    assert isinstance(answer, str) and message in answer, answer


def test_linked_grid_inputs_are_checked_when_they_arrive():
    assert _check() is True
    assert _check(layer_structures=None, dropout_structures=None) is True
    assert "line 1" in _check(layer_structures=None, activations="relu", dropout_structures="x")


def test_sweep_names_are_stable_unique_and_checked():
    a, b = HypernetSpec(layer_structure=[1, 1.5, 1], activation="swish"), HypernetSpec(layer_norm=True)
    assert sweep_names("net", [a]) == ["net"], "a single spec keeps the name as it is"
    twice = [a, b, HypernetSpec(layer_structure=[1, 1.5, 1], activation="swish", weight_init="XavierNormal")]
    assert sweep_names("net", twice) == ["net-1_1.5_1-swish", "net-1_2_1-linear-ln", "net-1_1.5_1-swish-2"]
    assert sweep_names("net", twice) == sweep_names("net", twice)
    with pytest.raises(ValueError, match="input 'name': the sweep's run name .* shorter name"):
        sweep_names("n" * 220, [a, b])  # the name alone fits; with its spec it does not
    with pytest.raises(ValueError, match=f"input 'hypernet_spec': got {MAX_SWEEP_SPECS + 1} specs"):
        sweep_names("net", [a] * (MAX_SWEEP_SPECS + 1))


def test_the_executor_maps_a_per_item_node_over_the_grids_specs(headless_dirs):
    """ComfyUI's rule, which Train Hypernet's INPUT_IS_LIST opts out of: a node without it runs
    once per item of a list input."""
    class Describe:
        RETURN_TYPES, FUNCTION, OUTPUT_NODE = ("STRING",), "describe", True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"spec": ("HYPERNET_SPEC",)}}

        def describe(self, spec):
            return {"ui": {"text": [short_spec(spec)]}, "result": (short_spec(spec),)}

    registry = {"HN_HypernetSpecGrid": HypernetSpecGridNode, "Describe": Describe}
    prompt = {"1": {"class_type": "HN_HypernetSpecGrid", "inputs": {**GRID_DEFAULTS, "activations": "elu"}},
              "2": {"class_type": "Describe", "inputs": {"spec": ["1", 0]}}}
    result = Executor(registry).run(prompt)
    assert result.outputs["2"] == [["1,2,1 elu", "1,2,2,1 elu", "1,1.5,1.5,1 elu"]]


def _summary(log: Path) -> dict:
    summary = json.loads((log / "run_summary.json").read_text())
    assert list(summary) == SUMMARY_KEYS
    return summary


def test_an_interrupted_sweep_stops_and_summarises_the_run_it_stopped(headless_dirs, events):
    HEADLESS.interrupt.set()
    with pytest.raises(headless_host.InterruptedByUser):
        _run(steps=3, save_every=0, preview_every=0, inputs={"hypernet_spec": _grid(activations="relu")["result"][0]})
    runs = headless_dirs / "output" / "hypernet_training"
    assert [p.name for p in runs.iterdir()] == ["tinynet-1_2_1-relu"], "the later specs never start"
    summary = _summary(runs / "tinynet-1_2_1-relu")
    assert summary["steps"] == 1 and summary["best_val_loss"] is None and summary["best_val_step"] is None


def test_a_diverged_run_still_writes_its_summary_and_a_resume_updates_it(headless_dirs, events):
    spec = {"hypernet_spec": [HypernetSpec(sizes=None)]}
    with pytest.raises(TrainingDiverged, match="weights became NaN/inf at step 2"):  # step 2's rate overflows them
        _run(steps=3, save_every=1, preview_every=0, optimizer="SGD", learning_rate="0.001:1, 1e39", inputs=spec)
    log = headless_dirs / "output" / "hypernet_training" / "tinynet"
    diverged = _summary(log)
    assert diverged["spec"] == "1,2,1 linear" and diverged["steps"] == 2 and math.isfinite(diverged["final_loss"])
    _run(steps=3, save_every=0, preview_every=0, inputs={"hypernetwork": [load_hypernetwork(log / "tinynet-1.pt")]})
    assert _summary(log)["steps"] == 3


def test_one_run_hands_on_one_item_lists_as_the_old_single_outputs_did(headless_dirs, events):
    """Train Hypernet's outputs became lists (one item per run). ComfyUI hands every output on as a
    list: a plain output as [value], a list output as it is; so one run's [value] is what the
    downstream nodes got before. A workflow saved before (UI format) trains and samples as it did."""
    from hypernet_studio.runtime.api import run_workflow_file
    from hypernet_studio.runtime.examples import write_examples

    write_examples(headless_dirs)
    result = run_workflow_file(REPO_ROOT / "tests" / "nodes" / "fixtures" / "train_hypernet_saved_v0.1.json",
                               {"4.steps": 2, "4.preview_every": 0, "4.save_every": 0, "9.steps": 1})
    network, curve, previews, path, val_loss = result.outputs["4"]
    assert len(network) == len(curve) == len(path) == len(val_loss) == 1 and previews == []
    assert network[0].step == 2 and Path(path[0]).name == "example-hypernet.pt", "one spec: no suffix"
    assert len([p for p in result.files if p.name.startswith("hypernet_trained_sample")]) == 1


def test_the_shipped_sweep_trains_one_network_per_spec_and_encodes_the_pictures_once(headless_dirs, monkeypatch):
    """workflows/sweep_specs.json: 3 layer structures x relu, swish on the example set, headless,
    compared in one grid."""
    from hypernet_studio.runtime.api import run_workflow_file
    from hypernet_studio.runtime.examples import write_examples

    write_examples(headless_dirs)
    encoded = []
    encode = DiffusersBackend.encode_images
    monkeypatch.setattr(DiffusersBackend, "encode_images",
                        lambda self, pixels: encoded.append(pixels.shape[0]) or encode(self, pixels))
    events = []
    result = run_workflow_file(REPO_ROOT / "workflows" / "sweep_specs.json",
                               {"4.steps": 2, "4.save_every": 2, "6.steps": 1, "6.seeds": "1"},
                               event_callback=lambda name, data: events.append((name, data)))
    assert sum(encoded) == 4, "4 pictures (3 trained on, 1 held out), each encoded once for the 6 runs"
    specs = [("1_2_1", "1,2,1", [1, 2, 1]), ("1_2_2_1", "1,2,2,1", [1, 2, 2, 1]),
             ("1_1.5_1.5_1", "1,1.5,1.5,1", [1, 1.5, 1.5, 1])]
    runs = [(f"example-sweep-{suffix}-{activation}", f"{text} {activation}", structure)
            for suffix, text, structure in specs for activation in ("relu", "swish")]
    networks, curves, previews, paths, val_losses = result.outputs["4"]
    models = headless_dirs / "models" / "hypernetworks"
    assert paths == [str(models / f"{name}.pt") for name, _, _ in runs]
    assert [n.step for n in networks] == [2] * 6 and len(curves) == 6 and previews == []
    assert all(math.isfinite(v) for v in val_losses) and len(result.ui["5"]["images"]) == 6, "each loss curve"
    for (name, spec_text, structure), path in zip(runs, paths):
        network = load_hypernetwork(path)
        assert network.spec.layer_structure == structure and network.spec.activation == spec_text.split()[1]
        log = headless_dirs / "output" / "hypernet_training" / name
        summary = _summary(log)
        assert summary["spec"] == spec_text and summary["steps"] == 2 and summary["best_val_step"] == 2
        assert summary["parameters"] == sum(p.numel() for p in network.parameters())
        assert summary["seconds_per_step"] > 0 and math.isfinite(summary["final_loss"])
        assert (log / f"{name}-2.pt").is_file() and (log / "hypernetwork_loss.csv").is_file()
    text = result.ui["4"]["text"]
    assert text[0] == "sweep of 6 specs; the pictures were encoded once for all of them"
    assert [line.split(":")[0] for line in text if line.startswith("example-sweep")] == [r[0] for r in runs]
    epochs = "3 pictures (1 held out for validation); 2 images per step (batch 2 x accumulation 1); 1 step per epoch"
    assert sum(line.startswith(epochs) for line in text) == 1, "the sweep's epochs line, said once"
    shown = [data["text"] for name, data in events if name == "progress_text"]
    assert [line.split(": ")[0] for line in shown] == [f"run {i} of 6, {r[0]}" for i, r in enumerate(runs, 1)]
    assert all(line.endswith(f"{epochs}; 2 steps = 2 epochs") for line in shown), "each run's epochs line"
    [csv_file] = (headless_dirs / "output" / "hypernet_compare").glob("*.csv")
    table = csv_file.read_text().splitlines()
    assert [row.split(",")[0] for row in table[1:]] == ["no hypernetwork"] + [r[0] for r in runs], "one row per run"
    assert all(f'"{spec_text}"' in row for (_, spec_text, _), row in zip(runs, table[2:])), "with its spec"
