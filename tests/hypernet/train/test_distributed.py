"""Training on two processes (torchrun, gloo on the CPU) against one process with the same global
batch. One launch runs every scenario (distributed_worker.py); the tests read what each process saw."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.hypernet.train.batches import BatchPlan
from hypernet_studio.hypernet.train.distributed import SingleProcess, TrainingProcesses
from hypernet_studio.hypernet.train.run import train_hypernetwork
from hypernet_studio.hypernet.train.shared_encoding import encode_shared, encoding_share

from . import distributed_worker as worker
from .fakes import FakeBackend


def single_process(folder: Path, start=None, **overrides):
    """The same run in one process with twice the batch_size (the same global batch)."""
    config = worker.config(folder, **{"batch_size": 4, **overrides})
    return train_hypernetwork(FakeBackend(), start or worker.network(), worker.examples(), config, worker.Hooks())


@pytest.fixture(scope="module")
def launch(tmp_path_factory, torchrun):
    out = tmp_path_factory.mktemp("distributed")
    resume_from = out / "resume_from"
    single_process(resume_from, steps=2, save_every=2)  # one process -> two (second_half)
    for name in ("net-2.pt", "net-2.pt.optim"):
        (resume_from / name).write_bytes((resume_from / "log" / name).read_bytes())
    done = torchrun(worker.__file__, str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _read(out: Path, scenario: str) -> list[dict]:
    return [json.loads((out / scenario / f"rank-{rank}.json").read_text()) for rank in (0, 1)]


def _params(out: Path, scenario: str, rank: int = 0) -> torch.Tensor:
    state = torch.load(out / scenario / f"rank-{rank}.pt", weights_only=True)
    return torch.cat([p.flatten() for p in state["params"]])


def _assert_fp32_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Two processes sum the gradient of two halves; one process back-propagates the whole batch.
    The order of the sums differs, so the weights agree to fp32 rounding of their size."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("sampling", ["deterministic", "random"])
def test_two_processes_equal_one_with_the_same_global_batch(launch, tmp_path, sampling):
    scenario = "exact" if sampling == "deterministic" else "exact_random"
    ranks = _read(launch, scenario)
    assert all(r["error"] is None for r in ranks), [r["error"] for r in ranks]
    reference = single_process(tmp_path, gradient_accumulation=2, latent_sampling=sampling)
    want = torch.cat([p.detach().flatten() for p in reference.hypernetwork.parameters()])
    assert not torch.equal(want, torch.cat([p.detach().flatten() for p in worker.network().parameters()]))
    for rank in (0, 1):
        _assert_fp32_close(_params(launch, scenario, rank), want)
        assert ranks[rank]["losses"] == pytest.approx(reference.losses, rel=1e-5)


def test_each_process_trains_only_its_half_of_every_global_batch(launch):
    ranks = _read(launch, "exact")
    plan = BatchPlan([e.size for e in worker.examples()], 4, 2, seed=7)
    numbers = sorted({number for number, _ in ranks[0]["batches"]})
    assert plan.accumulation == 2 and numbers == list(range(6))  # 3 steps x 2 micro-batches
    for number in numbers:
        halves = [[indices for n, indices in r["batches"] if n == number] for r in ranks]
        assert [len(h) for h in halves] == [1, 1]
        assert halves[0][0] + halves[1][0] == plan.batch(number)
        assert len(halves[0][0]) == len(halves[1][0]) == 2


def test_only_rank_0_writes_and_the_csv_has_each_step_once(launch):
    ranks = _read(launch, "exact")
    assert ranks[1]["written"] == []
    names = [Path(p).name for p in ranks[0]["written"]]
    assert names.count("net-3.pt") == 1 and names.count("net.pt") == 1 and "hypernetwork_loss.csv" in names
    rows = (launch / "exact" / "log" / "hypernetwork_loss.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [1, 2, 3]


def test_a_nan_on_one_process_stops_both_with_the_last_good_file(launch):
    ranks = _read(launch, "nan")
    for rank in ranks:
        assert rank["error"] and rank["error"].startswith("TrainingDiverged"), rank["error"]
        assert "the loss became NaN/inf at step 2" in rank["error"], rank["error"]
        assert "net-1.pt" in rank["error"]
    assert (launch / "nan" / "log" / "net-1.pt").is_file()
    assert not (launch / "nan" / "log" / "net-2.pt").exists()
    torch.testing.assert_close(load_hypernetwork(launch / "nan" / "log" / "net-1.pt").step, 1)


def test_an_error_on_one_process_stops_both(launch):
    ranks = _read(launch, "error")
    assert ranks[1]["error"] == "RuntimeError: a stand-in failure on this process"
    assert ranks[0]["error"].startswith("RuntimeError: process(es) [1] failed at step 2"), ranks[0]["error"]


def test_an_interrupt_on_one_process_stops_both_and_saves_once(launch):
    ranks = _read(launch, "interrupt")
    assert [r["interrupted"] for r in ranks] == [True, True]
    assert ranks[0]["step"] == ranks[1]["step"] == 3  # seen at step 3's all-reduce, after that step
    names = [Path(p).name for p in ranks[0]["written"]]
    assert names.count("net-3.pt") == 1 and names.count("net.pt") == 1
    assert ranks[1]["written"] == [] and ranks[1]["stopped"] == []
    assert len(ranks[0]["stopped"]) == 1


def test_resume_across_world_sizes_equals_an_unbroken_run(launch, tmp_path):
    unbroken = single_process(tmp_path / "unbroken", steps=4, save_every=0)
    want = torch.cat([p.detach().flatten() for p in unbroken.hypernetwork.parameters()])
    # two processes -> one
    first_half = load_hypernetwork(launch / "first_half" / "log" / "net-2.pt")
    resumed = single_process(tmp_path / "resumed", start=first_half, steps=4, save_every=0)
    _assert_fp32_close(torch.cat([p.detach().flatten() for p in resumed.hypernetwork.parameters()]), want)
    # one process -> two
    assert _read(launch, "second_half")[0]["error"] is None
    _assert_fp32_close(_params(launch, "second_half"), want)


@pytest.mark.parametrize("scenario", list(worker.SHARED_ASKS))
def test_each_process_encodes_only_its_share_and_gets_every_latent(launch, scenario):
    records = [json.loads((launch / scenario / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    latents = [torch.load(launch / scenario / f"rank-{rank}.pt", weights_only=True) for rank in (0, 1)]
    asks = worker.SHARED_ASKS[scenario]
    union = sorted(set(asks[0]) | set(asks[1]))
    sizes = [example.size for example in worker.shared_examples()]
    here = [record["encoded_here"] for record in records]
    assert here == [encoding_share(sizes, union, rank, 2) for rank in (0, 1)]
    assert sorted(here[0] + here[1]) == union and not set(here[0]) & set(here[1]), "each picture once"
    assert [record["vae_pictures"] for record in records] == [len(share) for share in here]
    mean_only = scenario == "shared_mean_only"
    want = encode_shared(worker.shared_examples(), union, worker.CountingVae(mean_only), SingleProcess(), 2).latents
    for rank in (0, 1):
        assert sorted(latents[rank]) == union, "every process gets every picture any process asked for"
        for index in union:
            mean, std = latents[rank][index]
            assert torch.equal(mean, want[index][0]) and mean.device.type == "cpu"
            assert (std is None) if mean_only else torch.equal(std, want[index][1])


def test_two_processes_encode_each_picture_once_while_training(launch):
    encoded = [record["encoded_images"] for record in _read(launch, "exact")]
    assert encoded == [4, 4], "8 pictures, half on each process"


@pytest.mark.parametrize("where", ["cached_shared", "cached_per_machine"])
def test_through_the_latent_cache_two_processes_encode_each_picture_once_then_never(launch, where):
    first, second = _read(launch, f"{where}/first"), _read(launch, f"{where}/second")
    assert all(r["error"] is None for r in first + second), [r["error"] for r in first + second]
    assert [r["encoded_images"] for r in first] == [4, 4], "8 pictures, half on each process"
    assert [r["encoded_images"] for r in second] == [0, 0], "each process's cache holds every picture"
    for run in (f"{where}/first", f"{where}/second"):
        for rank in (0, 1):
            _assert_fp32_close(_params(launch, run, rank), _params(launch, "exact"))


def test_shares_cover_a_global_batch_that_does_not_split_evenly():
    shares = [list(TrainingProcesses(rank, 3, rank).share(7)) for rank in range(3)]
    assert shares == [[0, 1, 2], [3, 4], [5, 6]]
    assert TrainingProcesses.from_environment({"WORLD_SIZE": "1"}) is None
    assert TrainingProcesses.from_environment({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}).rank == 1


def test_a_single_process_takes_every_position_and_agrees_with_itself():
    alone = SingleProcess()
    assert (alone.rank, alone.world_size, alone.writes, alone.own_seed_labels) == (0, 1, True, ())
    assert list(alone.share(5)) == [0, 1, 2, 3, 4] and list(alone.share(0)) == []
    parameter = torch.nn.Parameter(torch.zeros(3))
    parameter.grad = torch.tensor([1.0, 2.0, 3.0])
    loss = torch.tensor(0.5)
    agreed = alone.agree([parameter], loss, True, False)
    assert agreed.loss is loss and agreed.stop and agreed.failed_ranks == ()
    assert torch.equal(parameter.grad, torch.tensor([1.0, 2.0, 3.0])), "the gradients stay as they are"
    assert not alone.agree([parameter], loss, False, True).stop
    alone.start(torch.device("cpu"))
    alone.check_same_start(0, [parameter], torch.device("cpu"))


def test_a_single_process_raises_at_once_and_asks_to_stop_after_the_step():
    alone, asked = SingleProcess(), []

    def stop_asked():
        asked.append(True)
        return True

    def failing_step():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        alone.agree_on_step(failing_step, [], stop_asked, 1, torch.device("cpu"))
    agreed = alone.agree_on_step(lambda: torch.tensor(2.0), [], stop_asked, 1, torch.device("cpu"))
    assert float(agreed.loss) == 2.0 and not agreed.stop and asked == [], "not asked during the step"
    assert alone.stop_after_step(stop_asked) and asked == [True]
    assert not TrainingProcesses(0, 2, 0).stop_after_step(stop_asked) and asked == [True]
    assert TrainingProcesses(1, 2, 1).own_seed_labels == (1,) and not alone.shares_interrupts


def test_no_processes_means_a_single_process(tmp_path):
    config = worker.config(tmp_path, batch_size=4, save_every=0, csv_every=0, log_dir=None, final_path=None)
    implicit = train_hypernetwork(FakeBackend(), worker.network(), worker.examples(), config)
    explicit = train_hypernetwork(FakeBackend(), worker.network(), worker.examples(), config, processes=SingleProcess())
    assert implicit.losses == explicit.losses
    assert torch.equal(torch.cat([p.detach().flatten() for p in implicit.hypernetwork.parameters()]),
                       torch.cat([p.detach().flatten() for p in explicit.hypernetwork.parameters()]))
