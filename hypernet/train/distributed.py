"""Training on several processes (torchrun): the process group, the split of each global
batch, and the one collective per optimizer step.

Every process runs the same workflow, so every process holds the same images, captions and
starting network. Per optimizer step each process back-propagates only its share of every
global micro-batch, then one all-reduce sums, in a single flat buffer, every gradient (zeros
where a process has none), the step's loss, and two flags: "stop" (an interrupt on any
process) and "failed" (a NaN or an error on any process). So every process takes the same
decision at the same step, and nothing waits for a collective another process never reaches.

Each process's loss is its samples' share of the global mean (summed per-sample losses over
the global micro-batch size), so the summed gradient is the gradient of the global mean
whatever the split; with equal shares this is the usual mean of per-process means."""
from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist

# torchrun's environment: rank of this process, number of processes, rank within this machine.
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# How long a collective may wait before the process gives up (a process that died is noticed by
# torchrun much sooner; this only bounds a hang that torchrun cannot see).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class StepAgreement:
    """What the processes agreed on after one step's all-reduce."""

    loss: torch.Tensor  # the global step loss (0-d, on the device)
    stop: bool  # some process was asked to stop
    failed_ranks: tuple[int, ...]  # processes whose step raised (their own error is raised there)


@dataclass(frozen=True)
class TrainingProcesses:
    """This process's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environment(cls, environ: Optional[dict] = None) -> Optional["TrainingProcesses"]:
        """The launch torchrun describes in the environment, or None for a single process."""
        environ = os.environ if environ is None else environ
        if int(environ.get("WORLD_SIZE", "1") or 1) <= 1:
            return None
        return cls(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", "0")))

    @property
    def writes(self) -> bool:
        """Only rank 0 writes files and shows progress."""
        return self.rank == 0

    def device(self) -> torch.device:
        """The GPU `LOCAL_RANK` when there is CUDA, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def start(self, device: torch.device) -> None:
        """Join the process group (NCCL on CUDA, gloo on the CPU) unless already joined."""
        if dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
        atexit.register(_leave_group)

    # ------------------------------------------------------------------ data
    def share(self, positions: int) -> range:
        """This process's contiguous share of a global micro-batch of `positions` samples."""
        base, extra = divmod(positions, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (1 if self.rank < extra else 0))

    # ------------------------------------------------------------------ collectives
    def check_same_start(self, step: int, tensors: Sequence[torch.Tensor], device: torch.device) -> None:
        """Refuse to train when the processes start from different steps, weights or optimizer
        state (for example different files on different machines)."""
        mine = _fingerprint(step, tensors, device)
        everyone = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        differing = [rank for rank, theirs in enumerate(everyone) if not torch.equal(theirs, everyone[0])]
        if differing:
            raise RuntimeError(f"process(es) {differing} start from a different step, weights or optimizer state "
                               "than process 0: every process must load the same files")

    def agree(self, parameters: Sequence[torch.nn.Parameter], loss: torch.Tensor, stop: bool,
              failed: bool) -> StepAgreement:
        """Sum gradients, loss and flags over the processes (one all-reduce) and write the summed
        gradients back into every parameter's `.grad`."""
        device = loss.device
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flags = torch.zeros(self.world_size + 1, device=device, dtype=torch.float32)
        flags[0] = float(stop)
        flags[1 + self.rank] = float(failed)
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss.detach().reshape(1).float(), flags])
        dist.all_reduce(flat)
        offset = 0
        for parameter, grad in zip(parameters, grads):
            parameter.grad = flat[offset:offset + grad.numel()].view_as(grad).to(grad.dtype)
            offset += grad.numel()
        flags = flat[offset + 1:].tolist()
        return StepAgreement(flat[offset], flags[0] > 0, tuple(r for r in range(self.world_size) if flags[1 + r] > 0))

    @staticmethod
    def bytes_per_step(parameters: Sequence[torch.nn.Parameter], world_size: int) -> int:
        """Bytes each process sends into the step's all-reduce (fp32 gradients, loss, flags)."""
        return 4 * (sum(p.numel() for p in parameters) + 2 + world_size)


def _fingerprint(step: int, tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Five float64 numbers (step, count, size, sum, position-weighted sum) that differ when the
    step or any value differs; the same length on every process, whatever it holds."""
    total, weighted, size = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64), 0
    for tensor in tensors:
        data = tensor.detach().double().reshape(-1).cpu()
        positions = torch.arange(size + 1, size + data.numel() + 1, dtype=torch.float64)
        total, weighted, size = total + data.sum(), weighted + (data * positions).sum() / 1e6, size + data.numel()
    values = [float(step), float(len(tensors)), float(size)]
    return torch.cat([torch.tensor(values, dtype=torch.float64), total.reshape(1), weighted.reshape(1)]).to(device)


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
