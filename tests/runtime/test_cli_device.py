"""Under torchrun each process takes the GPU of its LOCAL_RANK, before anything loads. No GPU
here: torch.cuda is faked, and the fake records what the CLI asks of it."""
import pytest
import torch

from hypernet_studio.runtime import cli
from hypernet_studio.runtime.headless_host import HEADLESS


class _Loaded(Exception):
    """Raised where the CLI starts loading the node registry (the first thing that may touch CUDA)."""


@pytest.fixture
def two_gpus(monkeypatch):
    """Rank 1 of a torchrun launch of two, on a machine whose torch.cuda says it has GPUs."""
    events = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: events.append(("set_device", torch.device(device))))

    def registry():
        events.append(("load", None))
        raise _Loaded
    monkeypatch.setattr(cli, "_registry", registry)
    saved = HEADLESS.device
    yield events
    HEADLESS.device = saved


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_each_torchrun_process_sets_its_own_gpu_before_anything_loads(two_gpus, tmp_path, device):
    workflow = tmp_path / "w.json"
    workflow.write_text("{}")
    with pytest.raises(_Loaded):
        cli.main(["run", str(workflow), "--device", device])
    assert two_gpus == [("set_device", torch.device("cuda", 1)), ("load", None)]


def test_a_cpu_run_under_torchrun_sets_no_gpu(two_gpus, tmp_path):
    workflow = tmp_path / "w.json"
    workflow.write_text("{}")
    with pytest.raises(_Loaded):
        cli.main(["run", str(workflow), "--device", "cpu"])
    assert two_gpus == [("load", None)]


def test_a_setting_naming_one_gpu_for_every_process_is_refused(two_gpus):
    HEADLESS.configure(device="cuda:0")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        HEADLESS.torch_device()
    HEADLESS.configure(device="cuda:1")
    assert HEADLESS.torch_device() == torch.device("cuda", 1)
    HEADLESS.configure(device="cuda")
    assert HEADLESS.torch_device() == torch.device("cuda", 1)


@pytest.fixture
def torch_settings(monkeypatch):
    """torch's determinism settings, restored after the test."""
    import os

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    monkeypatch.setitem(os.environ, "CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved[2:]


def test_deterministic_sets_torch_up_before_anything_loads(monkeypatch, tmp_path, torch_settings):
    import os

    seen = []

    def registry():
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                     torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
                     torch.backends.cudnn.allow_tf32, os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        raise _Loaded
    monkeypatch.setattr(cli, "_registry", registry)
    saved = HEADLESS.device
    workflow = tmp_path / "w.json"
    workflow.write_text("{}")
    try:
        with pytest.raises(_Loaded):
            cli.main(["run", str(workflow), "--device", "cpu", "--deterministic"])
    finally:
        HEADLESS.device = saved
    assert seen == [(True, True, False, False, False, ":4096:8")]
