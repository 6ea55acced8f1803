"""host_copies.to_device: on CUDA through pinned memory without waiting; elsewhere a plain move.
No GPU here: Tensor.pin_memory and Tensor.to are stand-ins that record what they were asked."""
import torch

from hypernet_studio.hypernet.train.host_copies import to_device


def test_a_cuda_copy_goes_through_pinned_memory_without_blocking(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append(("pin", self.dtype)) or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: calls.append(("to", args, kwargs)) or self)
    to_device(torch.zeros(2, dtype=torch.int64), torch.device("cuda", 1))
    assert calls == [("pin", torch.int64), ("to", (torch.device("cuda", 1),), {"non_blocking": True})]


def test_other_devices_get_a_plain_move_and_the_dtype_asked_for():
    moved = to_device(torch.zeros(2, dtype=torch.float64), torch.device("meta"), torch.float32)
    assert moved.device.type == "meta" and moved.dtype == torch.float32
    same = torch.ones(3)
    assert to_device(same, torch.device("cpu")) is same
