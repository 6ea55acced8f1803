"""The training loop against a stand-in backend: loss math, accumulation, resume, NaN guard,
interrupt, file naming and CSV (docs/training.md)."""
import csv
import hashlib

import pytest
import torch

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.batches import BatchPlan, prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig, TrainHooks, TrainingDiverged
from hypernet_studio.hypernet.train.random_draws import generator
from hypernet_studio.hypernet.train.run import TrainingRun, train_hypernetwork

from .fakes import CHANNELS, CONTEXT, FakeBackend, tiny_dataset


def _examples(count=4, masks=None):
    images, captions = tiny_dataset(count)
    return prepare_examples(images, captions, masks, resolution=16, multiple=8)


def _network(activation="linear", dropout=None, init="XavierNormal", seed=0):
    spec = HypernetSpec(layer_structure=[1, 2, 1], activation=activation, weight_init=init,
                        dropout_structure=dropout, sizes=[CHANNELS, CONTEXT])
    return Hypernetwork.build(spec, seed=seed, name="net")


def _config(tmp_path=None, **overrides):
    values = dict(name="net", steps=10, learning_rate="0.001", seed=7, csv_every=1, latent_sampling="deterministic",
                  save_every=0, preview_every=0, templates=["[filewords]"])
    if tmp_path is not None:
        values.update(log_dir=tmp_path / "log", final_path=tmp_path / "models" / "net.pt")
    values.update(overrides)
    return TrainConfig(**values)


def _params(hypernetwork):
    return torch.cat([p.detach().flatten() for p in hypernetwork.parameters()])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_step_loss_and_gradient_match_reference_math_with_accumulation(prediction_type):
    backend = FakeBackend(prediction_type)
    examples = _examples(4)
    network = _network()
    reference_net = network.copy()
    config = _config(steps=1, batch_size=1, gradient_accumulation=2, optimizer="SGD", learning_rate="0.5",
                     csv_every=0)
    result = train_hypernetwork(backend, network, examples, config)
    assert all(e.pixels is None for e in examples), "the run holds latents, not pictures"
    examples = _examples(4)

    # Reference, written from the spec: x_t = sqrt(a) x0 + sqrt(1-a) eps, target eps or v,
    # MSE, each micro-batch loss divided by the accumulation count, one SGD step on the sum.
    # Each sample's timestep and noise come from (seed, micro-batch, position in it).
    alphas = backend.schedule().alphas_cumprod
    plan = BatchPlan([e.size for e in examples], 1, 2, seed=7)
    reference_net.train()
    reference_net.requires_grad_(True)
    from hypernet_studio.hypernet.patch import HypernetPatch
    patch = HypernetPatch([(reference_net, 1.0)])
    total = 0.0
    for number in range(2):
        (index,) = plan.batch(number)
        pixels = examples[index].pixels.movedim(-1, 1)
        x0 = torch.nn.functional.avg_pool2d(torch.cat([pixels, pixels.mean(1, keepdim=True)], 1) * 2 - 1, 8)
        draws = generator(7, "noise", number, 0)
        t = torch.randint(0, 1000, (1,), generator=draws)
        eps = torch.randn(x0.shape, generator=draws)
        assert 0 <= int(t) <= 999
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        target = eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        cond = backend.encode_texts([examples[index].caption])
        prediction = backend.unet(x_t, t, cond, (patch,), (patch,))
        loss = ((prediction - target) ** 2).mean() / 2
        loss.backward()
        total += float(loss.detach())
    assert result.losses == [pytest.approx(total, rel=1e-5)]
    with torch.no_grad():
        expected = torch.cat([(p - 0.5 * p.grad).flatten() for p in reference_net.parameters()])
    assert torch.allclose(_params(network), expected, atol=1e-6)
    assert network.step == 1


def test_loss_goes_down_on_a_fixed_tiny_dataset():
    backend = FakeBackend()
    config = _config(steps=60, learning_rate="0.03", batch_size=4, csv_every=0)
    result = train_hypernetwork(backend, _network(), _examples(4), config)
    first, last = sum(result.losses[:15]) / 15, sum(result.losses[-15:]) / 15
    assert last < 0.8 * first, (first, last)


def test_caches_encode_each_image_and_prompt_once(tmp_path):
    backend = FakeBackend()
    train_hypernetwork(backend, _network(), _examples(4), _config(steps=6, batch_size=2))
    assert backend.encoded_images == 4
    assert sorted(backend.encoded_texts) == sorted(e.caption for e in _examples(4))
    assert backend.offloaded
    shuffled = FakeBackend()
    train_hypernetwork(shuffled, _network(), _examples(4), _config(steps=6, shuffle_tags=True))
    assert len(set(shuffled.encoded_texts)) > 4 and not shuffled.offloaded


def test_files_are_named_by_steps_done_and_csv_has_a1111_columns(tmp_path):
    config = _config(tmp_path, steps=4, save_every=2, csv_every=2)
    result = train_hypernetwork(FakeBackend(), _network(), _examples(4), config)
    log = tmp_path / "log"
    assert [p.name for p in result.saved_paths] == ["net-2.pt", "net-4.pt"]
    assert load_hypernetwork(log / "net-2.pt").step == 2
    assert load_hypernetwork(log / "net-4.pt").step == 4
    optim = torch.load(log / "net-2.pt.optim", weights_only=True)
    assert {"optimizer_name", "hash", "optimizer_state_dict", "step", "seed"} <= set(optim)
    assert optim["optimizer_name"] == "AdamW" and optim["step"] == 2 and optim["seed"] == 7
    assert optim["hash"] == hashlib.sha256((log / "net-2.pt").read_bytes()).hexdigest()[:10]
    assert result.final_path == tmp_path / "models" / "net.pt" and load_hypernetwork(result.final_path).step == 4
    with (log / "hypernetwork_loss.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "epoch", "epoch_step", "loss", "learn_rate"]
    assert [r["step"] for r in rows] == ["2", "4"]
    assert float(rows[1]["loss"]) == pytest.approx(result.losses[3], abs=1e-7)
    assert rows[0]["epoch"] == "0" and rows[1]["epoch"] == "0" and rows[1]["epoch_step"] == "3"


def test_resume_from_a_saved_file_equals_an_unbroken_run(tmp_path):
    overrides = dict(steps=10, batch_size=2, gradient_accumulation=2, shuffle_tags=True, tag_dropout=0.2,
                     latent_sampling="random", learning_rate="0.003:4, 0.001", save_every=5)
    dropout = [0, 0.2, 0]
    unbroken = train_hypernetwork(FakeBackend(), _network(dropout=dropout), _examples(8),
                                  _config(tmp_path / "a", **overrides))
    first = train_hypernetwork(FakeBackend(), _network(dropout=dropout), _examples(8),
                               _config(tmp_path / "b", **{**overrides, "steps": 5}))
    resumed_net = load_hypernetwork(tmp_path / "b" / "log" / "net-5.pt")
    assert resumed_net.step == 5
    second = train_hypernetwork(FakeBackend(), resumed_net, _examples(8), _config(tmp_path / "b", **overrides))
    assert second.resumed_optimizer
    assert first.losses + second.losses == pytest.approx(unbroken.losses, rel=0, abs=1e-6)
    assert torch.allclose(_params(resumed_net), _params(unbroken.hypernetwork), atol=1e-6, rtol=0)
    # Without the optimizer state the continuation differs: the check above is not vacuous.
    (tmp_path / "b" / "log" / "net-5.pt.optim").unlink()
    third = train_hypernetwork(FakeBackend(), load_hypernetwork(tmp_path / "b" / "log" / "net-5.pt"),
                               _examples(8), _config(tmp_path / "c", **{**overrides, "seed": 7}))
    assert not third.resumed_optimizer
    assert not torch.allclose(_params(third.hypernetwork), _params(unbroken.hypernetwork), atol=1e-6)


def test_nan_stops_training_and_keeps_the_last_good_file(tmp_path):
    backend = FakeBackend(nan_at_call=5)
    config = _config(tmp_path, steps=10, save_every=2)
    with pytest.raises(TrainingDiverged, match="step 5.*lower learning rate") as info:
        train_hypernetwork(backend, _network(), _examples(4), config)
    assert info.value.step == 5
    assert info.value.last_good_path == tmp_path / "log" / "net-4.pt"
    assert sorted(p.name for p in (tmp_path / "log").glob("*.pt")) == ["net-2.pt", "net-4.pt"]
    assert not (tmp_path / "models" / "net.pt").exists()
    assert all(torch.isfinite(p).all() for p in load_hypernetwork(tmp_path / "log" / "net-4.pt").parameters())


def test_an_interrupt_saves_then_stops(tmp_path):
    class StopAtThree(TrainHooks):
        def __init__(self):
            self.steps = []

        def should_stop(self):
            return len(self.steps) == 3

        def on_step(self, step, total, loss, learn_rate):
            self.steps.append(step)

    config = _config(tmp_path, steps=10, save_every=5)
    result = train_hypernetwork(FakeBackend(), _network(), _examples(4), config, StopAtThree())
    assert result.interrupted and len(result.losses) == 4
    assert load_hypernetwork(tmp_path / "log" / "net-4.pt").step == 4
    assert (tmp_path / "log" / "net-4.pt.optim").is_file()
    assert load_hypernetwork(tmp_path / "models" / "net.pt").step == 4


def test_a_host_interrupt_raised_from_progress_still_saves(tmp_path):
    class Raising(TrainHooks):
        def on_step(self, step, total, loss, learn_rate):
            if step == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_hypernetwork(FakeBackend(), _network(), _examples(4), _config(tmp_path, steps=10), Raising())
    assert load_hypernetwork(tmp_path / "log" / "net-2.pt").step == 2


def test_alpha_weight_changes_the_loss_and_previews_are_made(tmp_path):
    masks = [torch.zeros(1, 16, 16) for _ in range(4)]
    for mask in masks:
        mask[:, :, :8] = 1.0  # left half transparent
    plain = train_hypernetwork(FakeBackend(), _network(), _examples(4), _config(steps=2))
    weighted = train_hypernetwork(FakeBackend(), _network(), _examples(4, masks),
                                  _config(tmp_path, steps=2, use_alpha_weight=True, preview_every=2,
                                          preview_steps=3, preview_prompt="a test"))
    assert weighted.losses != pytest.approx(plain.losses)
    assert len(weighted.previews) == 1 and weighted.previews[0].shape == (1, 16, 16, 3)
    assert weighted.preview_paths[0].name == "net-2.png" and weighted.preview_paths[0].is_file()


@pytest.mark.parametrize("overrides,input_name,text", [
    ({"optimizer": "Nope"}, "optimizer", "'Nope' is not a usable torch.optim optimizer"),
    ({"learning_rate": "fast"}, "learning_rate", "invalid learning_rate schedule"),
    ({"name": "../evil"}, "name", "letters, digits"),
    ({"clip_grad_mode": "sometimes"}, "clip_grad_mode", "not one of"),
    ({"steps": 10}, "steps", "already trained for 10 steps"),
])
def test_bad_settings_are_refused_with_the_input_named(overrides, input_name, text):
    trained = _network()
    trained.step = 10
    with pytest.raises(InputError, match=text) as caught:
        train_hypernetwork(FakeBackend(), trained, _examples(2), _config(**{"steps": 20, **overrides}))
    assert caught.value.input_name == input_name
    assert "Train Hypernet" not in str(caught.value), "the library never names a node"


@pytest.mark.parametrize("overrides,input_name", [
    ({"lr_scheduler": "cosine", "learning_rate": "1e-4:10, 1e-5"}, "learning_rate"),
    ({"lr_scheduler": "cosine", "warmup_steps": 10}, "warmup_steps"),
    ({"lr_scheduler": "cosine_with_restarts", "min_learning_rate": 0.5, "learning_rate": "0.1"}, "min_learning_rate"),
    ({"lr_scheduler": "sometimes"}, "lr_scheduler"),
    ({"loss_type": "l3"}, "loss_type"),
    ({"min_snr_gamma": -1}, "min_snr_gamma"),
    ({"validation_split": 1.0}, "validation_split"),
    ({"preview_seeds": "1, two"}, "preview_seeds"),
])
def test_bad_options_are_refused_before_any_work(overrides, input_name):
    backend = FakeBackend()
    with pytest.raises(InputError) as caught:
        train_hypernetwork(backend, _network(), _examples(2), _config(**overrides))
    assert caught.value.input_name == input_name
    assert backend.encoded_images == 0, "refused before anything was encoded"


@pytest.mark.parametrize("step", [lambda run: run.micro_step(0), lambda run: run.optimizer_step(0.001),
                                  lambda run: run.validate(), lambda run: run.preview(), lambda run: run.stop()])
def test_stepping_before_prepare_is_a_clear_error(step):
    run = TrainingRun(FakeBackend(), _network(), _examples(2), _config())
    with pytest.raises(RuntimeError, match="call prepare") as caught:
        step(run)
    assert not isinstance(caught.value, AttributeError)
    state = run.prepare()
    assert run.state is state and float(run.micro_step(0)) > 0, "prepared, the same step runs"


@pytest.mark.parametrize("step, message", [(lambda run: run.validate(), "does not validate"),
                                           (lambda run: run.preview(), "makes no previews")])
def test_validating_or_previewing_a_run_without_them_is_a_clear_error(step, message):
    run = TrainingRun(FakeBackend(), _network(), _examples(2), _config())  # no held-out images, preview_every 0
    run.prepare()
    with pytest.raises(RuntimeError, match=message):
        step(run)
    assert run.network.training, "refused before switching the network to eval mode"


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_keeps_fp32_master_weights(precision):
    result = train_hypernetwork(FakeBackend(), _network(), _examples(2), _config(steps=3, precision=precision))
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    assert all(p.dtype == torch.float32 for p in result.hypernetwork.parameters())
    fp32 = train_hypernetwork(FakeBackend(), _network(), _examples(2), _config(steps=3))
    assert result.losses != fp32.losses and result.losses == pytest.approx(fp32.losses, rel=0.05)


def test_gradient_clipping_by_norm_limits_the_update():
    config = _config(steps=1, optimizer="SGD", learning_rate="1.0", clip_grad_mode="norm", clip_grad_value="0.001")
    before = _network()
    result = train_hypernetwork(FakeBackend(), before.copy(), _examples(2), config)
    change = _params(result.hypernetwork) - _params(before)
    assert float(change.norm()) == pytest.approx(0.001, rel=1e-3)


def test_clipping_keeps_its_last_value_after_its_schedule_ends_as_a1111():
    # A1111's clip scheduler holds its last value once exhausted: "0.001:1" clips every step.
    config = _config(steps=3, optimizer="SGD", learning_rate="1.0", clip_grad_mode="norm", clip_grad_value="0.001:1")
    before = _network()
    result = train_hypernetwork(FakeBackend(), before.copy(), _examples(2), config)
    change = _params(result.hypernetwork) - _params(before)
    assert float(change.norm()) <= 0.003 * (1 + 1e-3)


def test_weights_overflowing_with_finite_gradients_are_never_saved(tmp_path):
    # lr 1e39 overflows fp32 weights in one SGD step although loss and gradients were finite.
    config = _config(tmp_path, steps=1, optimizer="SGD", learning_rate="1e39", save_every=1)
    with pytest.raises(TrainingDiverged, match="weights became NaN/inf at step 1.*lower learning rate") as info:
        train_hypernetwork(FakeBackend(), _network(), _examples(2), config)
    assert info.value.step == 1 and info.value.last_good_path is None
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.optim"))


def test_resuming_past_the_end_of_the_clipping_schedule_keeps_clipping():
    config = _config(steps=6, optimizer="SGD", learning_rate="1.0", clip_grad_mode="norm", clip_grad_value="0.001:1")
    before = _network()
    before.step = 5
    result = train_hypernetwork(FakeBackend(), before.copy(), _examples(2), config)
    change = _params(result.hypernetwork) - _params(before)
    assert float(change.norm()) == pytest.approx(0.001, rel=1e-3)


def test_mixed_sizes_train_in_same_size_batches():
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 16, 16, 3, generator=generator) for _ in range(3)]
    images += [torch.rand(1, 16, 32, 3, generator=generator) for _ in range(3)]
    examples = prepare_examples(images, [f"tag{i}" for i in range(6)], None, resolution=16, multiple=8)
    assert len({e.size for e in examples}) == 2
    backend = FakeBackend()
    result = train_hypernetwork(backend, _network(), examples, _config(steps=6, batch_size=2))
    assert len(result.losses) == 6 and all(torch.isfinite(torch.tensor(result.losses)))


def test_a_host_interrupt_raised_inside_the_model_call_keeps_the_finished_steps(tmp_path):
    """ComfyUI's ops raise its interrupt from inside the UNet forward (found by interrupting a
    training run in a real ComfyUI: nothing was saved). The unfinished step is dropped and the
    finished ones are saved before the exception goes on."""
    class InterruptProcessingException(Exception):
        pass

    class InterruptedBackend(FakeBackend):
        def predict(self, x_t, timesteps, context):
            if self.calls == 3:  # the 4th step's forward
                raise InterruptProcessingException()
            return super().predict(x_t, timesteps, context)

    class HostHooks(TrainHooks):
        def is_interrupt(self, exc):
            return type(exc).__name__ == "InterruptProcessingException"

    with pytest.raises(InterruptProcessingException):
        train_hypernetwork(InterruptedBackend(), _network(), _examples(4), _config(tmp_path, steps=10), HostHooks())
    assert load_hypernetwork(tmp_path / "log" / "net-3.pt").step == 3
    assert (tmp_path / "log" / "net-3.pt.optim").is_file()
    assert load_hypernetwork(tmp_path / "models" / "net.pt").step == 3

    # Anything else is not an interrupt: it propagates and saves nothing new.
    with pytest.raises(InterruptProcessingException):
        train_hypernetwork(InterruptedBackend(), _network(), _examples(4), _config(tmp_path / "other", steps=10))
    assert not (tmp_path / "other" / "models" / "net.pt").exists()


def test_previews_are_prompt_by_seed_grids_with_fixed_seeds(tmp_path):
    def run(prompt, seeds, steps=2):
        config = _config(tmp_path, steps=steps, preview_every=2, preview_steps=2, preview_prompt=prompt,
                         preview_seeds=seeds, learning_rate="0.0000001", overwrite=True)
        return train_hypernetwork(FakeBackend(), _network(), _examples(2), config)

    grid = run("a cat\n\na dog", "1, 2").previews[0]
    assert grid.shape == (1, 32, 32, 3), "two prompts (rows) x two seeds (columns) of 16x16"
    cell = run("a dog", "2").previews[0]
    torch.testing.assert_close(grid[:, 16:, 16:], cell, rtol=0, atol=1e-6)
    twice = run("a cat\na dog", "1 2", steps=4)
    assert len(twice.previews) == 2 and twice.preview_paths[-1].name == "net-4.png"
    assert not torch.equal(twice.previews[0][:, :16, :16], twice.previews[0][:, :16, 16:]), "seeds differ"


def test_tensorboard_gets_loss_validation_rate_and_previews(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _config(tmp_path, steps=4, log_to="tensorboard", validation_split=0.5, validation_every=2,
                     preview_every=4, preview_steps=1)
    train_hypernetwork(FakeBackend(), _network(), _examples(4), config)
    events = EventAccumulator(str(tmp_path / "log" / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss/train", "loss/validation", "learning_rate"}
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("loss/validation")] == [2, 4]
    assert events.Tags()["images"] == ["preview"]
