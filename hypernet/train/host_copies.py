"""Host tensors onto the training device without a host sync per micro-batch.

The caches (latents.py) and the random draws (random_draws.py) live on the CPU: the caches because
a GPU's memory is for the model, the draws because a CPU generator gives the same numbers on every
machine, which is what makes resume replay them. A copy from pageable memory to a GPU waits for the
copy to finish, so on CUDA each batch is copied from pinned memory with non_blocking=True: the host
queues it and goes on to queue the step."""
from __future__ import annotations

from typing import Optional

import torch


def to_device(tensor: torch.Tensor, device: torch.device, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """`tensor` (on the CPU) on `device`, in `dtype` if given; on CUDA through pinned memory,
    asynchronously (torch orders the copy before any later kernel on the stream that reads it)."""
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
