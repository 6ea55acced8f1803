"""The learning rate: A1111 schedule strings (docs/training.md, Schedules), and the schedulers: the
rates a run uses are the ones the libraries' own schedulers give, and a resumed run continues
mid-cycle exactly."""
import math

import pytest
import torch

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.train.learning_rate import A1111Rate, ScheduleError, base_rate, parse_schedule
from hypernet_studio.hypernet.train.run import train_hypernetwork

from .fakes import FakeBackend
from .test_run import _config, _examples, _network, _params

SPEC_CASE = "5e-5:100, 5e-6:1500, 5e-7"


def test_spec_case_from_zero():
    schedule = parse_schedule(SPEC_CASE, max_steps=2000, start_step=0)
    assert schedule.value_at(0) == 5e-5
    assert schedule.value_at(99) == 5e-5
    assert schedule.value_at(100) == 5e-6
    assert schedule.value_at(1499) == 5e-6
    assert schedule.value_at(1500) == 5e-7
    assert schedule.value_at(1999) == 5e-7
    assert schedule.end_step == 2000
    assert not schedule.finished(1999) and schedule.finished(2000)
    assert schedule.value_at(2000) is None


def test_spec_case_resumed_at_150_skips_the_finished_pair():
    schedule = parse_schedule(SPEC_CASE, max_steps=2000, start_step=150)
    assert schedule.segments == ((5e-6, 1500), (5e-7, 2000))
    assert schedule.value_at(150) == 5e-6
    assert schedule.value_at(1499) == 5e-6
    assert schedule.value_at(1500) == 5e-7
    assert schedule.finished(2000)


def test_bare_rate_runs_to_max_steps():
    schedule = parse_schedule("0.00001", max_steps=300)
    assert schedule.segments == ((1e-5, 300),)


def test_minus_one_runs_to_max_and_ends_parsing():
    schedule = parse_schedule("1e-4:-1, 1e-6:5000", max_steps=300)
    assert schedule.segments == ((1e-4, 300),)


def test_step_above_max_is_clamped_and_ends_parsing():
    schedule = parse_schedule("1e-4:50, 1e-5:900, 1e-6", max_steps=200)
    assert schedule.segments == ((1e-4, 50), (1e-5, 200))
    assert schedule.finished(200)


def test_schedule_without_a_bare_rate_finishes_early():
    schedule = parse_schedule("1e-4:50, 1e-5:100", max_steps=2000)
    assert schedule.end_step == 100


@pytest.mark.parametrize("text", ["", "abc", "1e-4:x", "1e-4:60, 1e-5:50", "1:2:3"])
def test_invalid_schedules_raise_a_clear_error(text):
    with pytest.raises(ScheduleError, match="schedule"):
        parse_schedule(text, max_steps=100)


def test_nothing_left_after_resume_is_an_error():
    with pytest.raises(ScheduleError, match="no segment after step 150"):
        parse_schedule("1e-4:100", max_steps=2000, start_step=150)


def test_base_rate_past_the_last_step_names_steps_not_a_type_error():
    assert base_rate(_config(steps=10, learning_rate="0.001"), 9) == 0.001
    with pytest.raises(InputError, match="ends at step 10") as caught:
        base_rate(_config(steps=10, learning_rate="0.001"), 10)
    assert caught.value.input_name == "steps"


def test_setting_a_rate_after_the_schedule_ended_is_a_clear_error():
    rate = A1111Rate(parse_schedule("0.5:10, 0.1:20", max_steps=100))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert rate.set_for_step(optimizer, 19) == 0.1 and optimizer.param_groups[0]["lr"] == 0.1
    assert rate.finished(20)
    with pytest.raises(RuntimeError, match="ends at step 20: there is no rate for step 20"):
        rate.set_for_step(optimizer, 20)


def test_held_value_stays_at_the_last_value_after_the_end():
    schedule = parse_schedule("0.5:10, 0.1:20", max_steps=100)
    assert schedule.held_value_at(9) == 0.5 and schedule.held_value_at(10) == 0.1
    assert schedule.value_at(20) is None and schedule.held_value_at(20) == 0.1 and schedule.held_value_at(99) == 0.1


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


def test_cosine_reaches_zero_at_the_end():
    config = _config(steps=8, optimizer="SGD", learning_rate="0.002", lr_scheduler="cosine", csv_every=0)
    rates = train_hypernetwork(FakeBackend(), _network(), _examples(2), config).learning_rates
    assert rates[0] == pytest.approx(0.002)
    assert rates[-1] == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
