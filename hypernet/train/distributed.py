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
whatever the split; with equal shares this is the usual mean of per-process means.

Before the first step the processes also share the encoding of the pictures (shared_encoding.py
uses all_gather_tensors and barrier): each encodes its share, and every process gets every latent.

A process training alone gets SingleProcess, the same interface with nothing to share: the
training loop never asks how many processes there are."""
from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist

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
    def from_environment(cls, environ: Optional[Mapping[str, str]] = None) -> Optional["TrainingProcesses"]:
        """The launch torchrun describes in the environment, or None for a single process."""
        variables = os.environ if environ is None else environ
        if int(variables.get("WORLD_SIZE", "1") or 1) <= 1:
            return None
        return cls(int(variables["RANK"]), int(variables["WORLD_SIZE"]), int(variables.get("LOCAL_RANK", "0")))

    @property
    def writes(self) -> bool:
        """Only rank 0 writes files and shows progress."""
        return self.rank == 0

    @property
    def own_seed_labels(self) -> tuple[int, ...]:
        """Labels for the seeds of draws each process makes for itself (dropout masks): its rank."""
        return (self.rank,)

    @property
    def shares_interrupts(self) -> bool:
        """True: an interrupt raised between steps becomes a stop that the next step's all-reduce
        shares, so no process is left waiting in a collective."""
        return True

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
    def exchange_device(self) -> torch.device:
        """Where tensors for a collective live: the process's GPU with NCCL, the CPU with gloo."""
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def barrier(self) -> None:
        """Wait until every process has come here (for example: every process wrote its shards)."""
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()

    def all_gather_tensors(self, tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Every process's `tensors` (1-D, any lengths, on exchange_device()), per tensor a list
        by rank: one all-gather of the lengths, then one padded all-gather per tensor. The lengths
        come to the host once per call, not per tensor."""
        device = self.exchange_device()
        lengths = torch.tensor([t.numel() for t in tensors], dtype=torch.int64, device=device)
        everyone = [torch.empty_like(lengths) for _ in range(self.world_size)]
        dist.all_gather(everyone, lengths)
        by_rank = torch.stack(everyone).tolist()
        gathered = []
        for position, tensor in enumerate(tensors):
            longest = max(1, max(row[position] for row in by_rank))  # never an empty collective
            padded = torch.zeros(longest, dtype=tensor.dtype, device=device)
            padded[:tensor.numel()] = tensor
            parts = [torch.empty_like(padded) for _ in range(self.world_size)]
            dist.all_gather(parts, padded)
            gathered.append([part[:row[position]] for part, row in zip(parts, by_rank)])
        return gathered

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
        summed_flags = flat[offset + 1:].tolist()
        return StepAgreement(flat[offset], summed_flags[0] > 0,
                             tuple(r for r in range(self.world_size) if summed_flags[1 + r] > 0))

    def agree_on_step(self, step_loss: Callable[[], torch.Tensor], parameters: Sequence[torch.nn.Parameter],
                      stop_asked: Callable[[], bool], step: int, device: torch.device) -> StepAgreement:
        """This process's part of step `step` (`step_loss` runs its micro-batches), then the
        step's one all-reduce, which also shares whether the user asked to stop (`stop_asked`).
        An error in `step_loss` is shared first and then raised here; the other processes raise
        a RuntimeError naming this one."""
        error: Optional[BaseException] = None
        try:
            loss = step_loss()
        except Exception as exc:  # shared by the all-reduce below, then raised on this process
            error, loss = exc, torch.zeros((), device=device)
        agreed = self.agree(parameters, loss, stop_asked(), error is not None)
        if error is not None:
            raise error
        if agreed.failed_ranks:
            raise RuntimeError(f"process(es) {list(agreed.failed_ranks)} failed at step {step}; "
                               "every process stops (see that process's error)")
        return agreed

    def stop_after_step(self, stop_asked: Callable[[], bool]) -> bool:
        """False: the processes stop only on the flag a step's all-reduce shared (agree_on_step)."""
        return False

    @staticmethod
    def bytes_per_step(parameters: Sequence[torch.nn.Parameter], world_size: int) -> int:
        """Bytes each process sends into the step's all-reduce (fp32 gradients, loss, flags)."""
        return 4 * (sum(p.numel() for p in parameters) + 2 + world_size)


class SingleProcess:
    """TrainingProcesses' stand-in for a process that trains alone (no torchrun): every position
    of a micro-batch is its own, agreeing keeps its own values, it writes, and it draws as a run
    always has (no rank in any seed, so saved runs resume bit-identically)."""

    rank = 0
    world_size = 1
    local_rank = 0
    writes = True
    own_seed_labels: tuple[int, ...] = ()
    # An interrupt raised between steps propagates at once: there is no one to wait for.
    shares_interrupts = False

    def start(self, device: torch.device) -> None:
        """Nothing to join."""

    def share(self, positions: int) -> range:
        """Every position of the micro-batch."""
        return range(positions)

    def exchange_device(self) -> torch.device:
        """The CPU: nothing is exchanged."""
        return torch.device("cpu")

    def barrier(self) -> None:
        """No one to wait for."""

    def all_gather_tensors(self, tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Each tensor as the only process's."""
        return [[tensor] for tensor in tensors]

    def check_same_start(self, step: int, tensors: Sequence[torch.Tensor], device: torch.device) -> None:
        """Nothing to compare with."""

    def agree(self, parameters: Sequence[torch.nn.Parameter], loss: torch.Tensor, stop: bool,
              failed: bool) -> StepAgreement:
        """The local values as they are: the gradients stay, the loss is this process's, no one else failed."""
        return StepAgreement(loss, stop, ())

    def agree_on_step(self, step_loss: Callable[[], torch.Tensor], parameters: Sequence[torch.nn.Parameter],
                      stop_asked: Callable[[], bool], step: int, device: torch.device) -> StepAgreement:
        """The step's loss; an error raises at once, and the stop is asked after the step
        (stop_after_step), so `stop_asked` is not called here."""
        return self.agree(parameters, step_loss(), False, False)

    def stop_after_step(self, stop_asked: Callable[[], bool]) -> bool:
        """Whether the user asked to stop, asked once the step is done and recorded."""
        return stop_asked()


# What a training run is told about the processes it shares the work with.
Processes = Union[TrainingProcesses, SingleProcess]


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
