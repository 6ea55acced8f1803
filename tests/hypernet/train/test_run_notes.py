"""Issue 17: a run says what happened that its settings alone do not say."""
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.config import TrainConfig, TrainResult
from hypernet_studio.hypernet.train.distributed import TrainingProcesses
from hypernet_studio.hypernet.train.epochs import EpochFigures
from hypernet_studio.hypernet.train.session import run_notes


def _result(step: int, **fields) -> TrainResult:
    network = Hypernetwork.build(HypernetSpec(sizes=[8]), sizes=[8], seed=0, name="n")
    network.step = step
    return TrainResult(network, **fields)


def test_a_fresh_run_to_its_steps_says_nothing_more():
    assert run_notes(TrainConfig(name="n", steps=40, learning_rate="0.0005"), _result(40), 0) == []


def test_a_resume_says_where_it_continued_and_with_what():
    config = TrainConfig(name="n", steps=60, learning_rate="0.0005")
    assert run_notes(config, _result(60, resumed_optimizer=True), 40) == ["continued from step 40 with optimizer state"]
    [note] = run_notes(config, _result(60), 40)
    assert note.startswith("continued from step 40 without optimizer state")


def test_a_schedule_that_ends_before_steps_says_why_the_run_stopped():
    config = TrainConfig(name="n", steps=40, learning_rate="0.0005:20")
    [note] = run_notes(config, _result(20), 0)
    assert note.startswith("stopped at step 20 of 40: the learning_rate schedule '0.0005:20' ends at step 20")
    assert run_notes(config, _result(20, interrupted=True), 0) == [], "an interrupt is reported by the host"


def test_a_torchrun_launch_says_its_processes_and_global_batch():
    config = TrainConfig(name="n", steps=10, learning_rate="0.0005", batch_size=2, gradient_accumulation=3)
    notes = run_notes(config, _result(10), 0, TrainingProcesses(rank=0, world_size=4, local_rank=0))
    assert notes == ["trained on 4 processes: global batch 2 x 4 processes x 3 accumulation = 24 images per step"]


def test_with_epoch_figures_the_processes_are_said_once_as_the_plan_counts_them():
    """3 pictures on 4 processes at batch 2: the plan cuts the global batch to 3, so the config's
    'batch 2 x 4 processes' would overstate the images per step; the epochs line has the plan's."""
    config = TrainConfig(name="n", steps=10, learning_rate="0.0005", batch_size=2, gradient_accumulation=1)
    epochs = EpochFigures(pictures=3, held_out=0, global_batch=3, accumulation=1, processes=4, steps_per_epoch=1,
                          steps=10, start_step=0)
    notes = run_notes(config, _result(10, epochs=epochs), 0, TrainingProcesses(rank=0, world_size=4, local_rank=0))
    assert notes == ["3 pictures; 3 images per step (batch 3 shared by 4 processes x accumulation 1); "
                     "1 step per epoch; 10 steps = 10 epochs"]
