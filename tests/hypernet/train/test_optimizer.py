"""The optimizer options and the learning-rate schedulers: the rates a run uses are the ones the
libraries' own schedulers give, and a resumed run continues mid-cycle exactly."""
import math

import pytest
import torch

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.train.optimizer import make_optimizer, optimizer_options, parse_optimizer_args
from hypernet_studio.hypernet.train.run import train_hypernetwork

from .fakes import FakeBackend
from .test_run import _config, _examples, _network, _params


def _library_rates(make, steps, rate=0.002):
    """The rates a scheduler built straight from torch/diffusers gives for steps 0..steps-1."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=rate)
    scheduler = make(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def _diffusers(name, warmup, steps):
    from diffusers import optimization

    return lambda opt: getattr(optimization, name)(opt, warmup, *([steps] if "constant" not in name else []))


SCHEDULERS = {
    "constant_with_warmup": _diffusers("get_constant_schedule_with_warmup", 3, 12),
    "linear": _diffusers("get_linear_schedule_with_warmup", 3, 12),
    "cosine": _diffusers("get_cosine_schedule_with_warmup", 3, 12),
    "cosine_with_restarts": lambda opt: torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / 3),
              torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=4, T_mult=2, eta_min=0.0002)],
        milestones=[3]),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_each_scheduler_gives_the_librarys_rates(name):
    config = _config(steps=12, optimizer="SGD", learning_rate="0.002", lr_scheduler=name, warmup_steps=3,
                     restart_cycle_steps=4, restart_cycle_mult=2, min_learning_rate=0.0002, csv_every=0)
    result = train_hypernetwork(FakeBackend(), _network(), _examples(2), config)
    expected = _library_rates(SCHEDULERS[name], 12)
    assert result.learning_rates == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert result.learning_rates[0] == 0.0 and max(result.learning_rates) == pytest.approx(0.002)


def test_restarts_go_back_up_to_the_peak():
    config = _config(steps=12, optimizer="SGD", learning_rate="0.002", lr_scheduler="cosine_with_restarts",
                     restart_cycle_steps=4, min_learning_rate=0.0002, csv_every=0)
    rates = train_hypernetwork(FakeBackend(), _network(), _examples(2), config).learning_rates
    assert [rates[i] for i in (0, 4, 8)] == pytest.approx([0.002, 0.002, 0.002])
    assert min(rates) >= 0.0002 and rates[3] < rates[2] < rates[1]


def test_resuming_mid_cycle_is_exact(tmp_path):
    common = dict(steps=10, optimizer="AdamW", learning_rate="0.01", lr_scheduler="cosine_with_restarts",
                  warmup_steps=2, restart_cycle_steps=3, restart_cycle_mult=2, min_learning_rate=0.001, csv_every=0)
    unbroken = train_hypernetwork(FakeBackend(), _network(), _examples(4), _config(**common))
    first = train_hypernetwork(FakeBackend(), _network(), _examples(4),
                               _config(tmp_path, **{**common, "steps": 6, "save_every": 6}))
    from hypernet_studio.hypernet.file_format import load_hypernetwork

    resumed_net = load_hypernetwork(tmp_path / "log" / "net-6.pt")
    optim = torch.load(tmp_path / "log" / "net-6.pt.optim", weights_only=True)
    assert optim["lr_scheduler"]["kind"] == "cosine_with_restarts", "the scheduler's state is in the .optim"
    rest = train_hypernetwork(FakeBackend(), resumed_net, _examples(4), _config(**common))
    assert first.learning_rates + rest.learning_rates == unbroken.learning_rates
    assert torch.equal(_params(resumed_net), _params(unbroken.hypernetwork))


def test_optimizer_args_parse_and_name_a_bad_key():
    assert parse_optimizer_args("betas=0.9,0.99 eps=1e-8 amsgrad=true", "AdamW") == {
        "betas": (0.9, 0.99), "eps": 1e-8, "amsgrad": True}
    assert parse_optimizer_args("", "SGD") == {}
    with pytest.raises(InputError, match="'bettas' is not an option of torch.optim.AdamW") as caught:
        parse_optimizer_args("bettas=0.9,0.99", "AdamW")
    assert caught.value.input_name == "optimizer_args"
    with pytest.raises(InputError, match="key=value"):
        parse_optimizer_args("eps", "AdamW")
    with pytest.raises(InputError, match="numbers or true/false"):
        parse_optimizer_args("eps=tiny", "AdamW")


def test_defaults_are_torchs_and_options_reach_the_optimizer():
    parameters = [torch.nn.Parameter(torch.zeros(2))]
    default = make_optimizer("AdamW", parameters, 1e-3, optimizer_options(_config(optimizer="AdamW")))
    assert default.defaults["weight_decay"] == 0.01 and default.defaults["betas"] == (0.9, 0.999), "A1111's AdamW"
    tuned = make_optimizer("AdamW", parameters, 1e-3, optimizer_options(_config(
        optimizer="AdamW", weight_decay=0.05, optimizer_args="betas=0.9,0.99 eps=1e-6")))
    assert (tuned.defaults["weight_decay"], tuned.defaults["betas"], tuned.defaults["eps"]) == (0.05, (0.9, 0.99), 1e-6)
    adam = make_optimizer("Adam", parameters, 1e-3, optimizer_options(_config(optimizer="Adam")))
    assert adam.defaults["weight_decay"] == 0, "each optimizer keeps its own default"


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


def test_cosine_reaches_zero_at_the_end():
    config = _config(steps=8, optimizer="SGD", learning_rate="0.002", lr_scheduler="cosine", csv_every=0)
    rates = train_hypernetwork(FakeBackend(), _network(), _examples(2), config).learning_rates
    assert rates[0] == pytest.approx(0.002)
    assert rates[-1] == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
