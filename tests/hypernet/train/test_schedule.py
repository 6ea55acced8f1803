"""A1111 schedule strings (docs/training.md, Schedules)."""
import pytest

from hypernet_studio.hypernet.train.schedule import ScheduleError, parse_schedule

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


def test_held_value_stays_at_the_last_value_after_the_end():
    schedule = parse_schedule("0.5:10, 0.1:20", max_steps=100)
    assert schedule.held_value_at(9) == 0.5 and schedule.held_value_at(10) == 0.1
    assert schedule.value_at(20) is None and schedule.held_value_at(20) == 0.1 and schedule.held_value_at(99) == 0.1
