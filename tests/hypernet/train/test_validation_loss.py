"""Validation loss: a deterministic held-out split that training never sees, a loss that measures
the same thing every time, and NAME-best.pt holding the minimum."""
import math

import torch

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.hypernet.train.config import TrainHooks
from hypernet_studio.hypernet.train.run import TrainingRun, train_hypernetwork
from hypernet_studio.hypernet.train.validation_loss import split_examples

from .fakes import FakeBackend
from .test_run import _config, _examples, _network


def test_the_split_is_deterministic_from_the_seed_and_never_empties_training():
    examples = _examples(10)
    train_a, held_a = split_examples(examples, 0.3, seed=5)
    train_b, held_b = split_examples(examples, 0.3, seed=5)
    assert [e.caption for e in held_a] == [e.caption for e in held_b] and len(held_a) == 3
    assert {e.caption for e in held_a}.isdisjoint(e.caption for e in train_a)
    assert [e.caption for e in split_examples(examples, 0.3, seed=6)[1]] != [e.caption for e in held_a]
    assert len(split_examples(_examples(2), 0.9, 0)[0]) == 1, "at least one image stays for training"
    assert split_examples(examples, 0.0, 0)[1] == []


def test_held_out_images_never_reach_a_training_batch():
    run = TrainingRun(FakeBackend(), _network(), _examples(8), _config(steps=20, validation_split=0.25,
                                                                        batch_size=2))
    state = run.prepare()
    held = {e.caption for e in state.validation_examples}
    assert len(held) == 2
    seen = {state.examples[i].caption for number in range(40) for i in state.plan.batch(number)}
    assert seen and seen.isdisjoint(held) and len(state.examples) == 6


def test_the_validation_loss_is_identical_on_unchanged_weights():
    run = TrainingRun(FakeBackend(), _network(dropout=[0, 0.3, 0]), _examples(8),
                      _config(steps=5, validation_split=0.5, batch_size=2))
    run.prepare()
    run.network.train()  # validate() must switch dropout off itself
    first, second = run.validate(), run.validate()
    assert first == second and math.isfinite(first)
    assert run.result.validation_losses == [first, second]


def test_best_file_holds_the_minimum_and_the_csv_has_val_loss(tmp_path):
    seen = []

    class Hooks(TrainHooks):
        def on_validation(self, step, val_loss):
            seen.append((step, val_loss))

    config = _config(tmp_path, steps=12, validation_split=0.5, validation_every=3, learning_rate="0.01",
                     csv_every=4, batch_size=2)
    result = train_hypernetwork(FakeBackend(), _network(), _examples(8), config, Hooks())
    assert result.validation_steps == [3, 6, 9, 12] and [s for s, _ in seen] == [3, 6, 9, 12]
    best = min(result.validation_losses)
    best_step = result.validation_steps[result.validation_losses.index(best)]
    assert result.best_step == best_step and result.best_path == tmp_path / "log" / "net-best.pt"
    stored = load_hypernetwork(result.best_path)
    assert stored.step == best_step
    optim = torch.load(f"{result.best_path}.optim", weights_only=True)
    assert optim["val_loss"] == best
    rows = (tmp_path / "log" / "hypernetwork_loss.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,epoch_step,loss,learn_rate,val_loss"
    by_step = {int(r.split(",")[0]): r.split(",")[-1] for r in rows[1:]}
    assert sorted(by_step) == [3, 4, 6, 8, 9, 12], "every validation step gets a row, due or not"
    assert by_step[4] == "" and float(by_step[9]) == round(result.validation_losses[2], 7)


def test_a_separate_validation_set_is_used_as_given():
    held = _examples(3)
    result = train_hypernetwork(FakeBackend(), _network(), _examples(4), _config(steps=4, validation_every=2),
                                validation_examples=held)
    assert result.validation_steps == [2, 4] and all(math.isfinite(v) for v in result.validation_losses)


def test_without_validation_nothing_changes():
    plain = train_hypernetwork(FakeBackend(), _network(), _examples(4), _config(steps=6))
    assert plain.validation_losses == [] and plain.best_path is None
