"""Pictures encoded once across the processes of a torchrun launch.

Every process runs the same workflow and holds the same pictures, so without sharing each one
would run every picture through the VAE. Here the processes first agree on the pictures that
need encoding (the union of what each asks for: with a latent cache on each machine's own disk
they can miss different pictures), each encodes every world_size-th of them, and the results
are exchanged so that every process ends with all of them: VAE encodes in total = pictures.

The exchange sends flat fp32 buffers and an int64 table per process (no pickled objects), on
the device the process group talks through (the GPU with NCCL, the CPU with gloo), a bounded
number of pictures per round so that the buffers stay small; the results come back to the CPU
once per round, never per picture. A process training alone (SingleProcess) encodes everything
itself in the order latents have always been encoded, so its latents are unchanged."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .batches import TrainingExample
from .distributed import Processes

# A latent distribution: the mean and the std (None when the VAE gives only the mean), [1,C,h,w]
# fp32 on the CPU.
Encoded = tuple[torch.Tensor, Optional[torch.Tensor]]
Encode = Callable[[torch.Tensor], tuple[torch.Tensor, Optional[torch.Tensor]]]

# Pictures per exchange round, over all processes: bounds the buffers each round gathers (SDXL at
# 1024 px: 512 x 2 x 256 KiB = 256 MiB) while keeping the rounds, and their collectives, few.
EXCHANGE_ROUND_PICTURES = 512
# Columns of the table that describes each encoded picture in a round's buffer.
_INDEX, _CHANNELS, _HEIGHT, _WIDTH, _HAS_STD = range(5)
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class SharedEncoding:
    """What encode_shared gives every process."""

    latents: dict[int, Encoded]  # every picture any process asked for, the same on every process
    encoded_here: tuple[int, ...]  # the pictures this process ran through the VAE (the ones it writes)


def encoding_order(sizes: Sequence[tuple[int, int]], indices: Sequence[int]) -> list[int]:
    """`indices` without repeats, grouped by picture size (groups in the order of their first
    picture, pictures ascending within a group): the order pictures are encoded in."""
    groups: "OrderedDict[tuple[int, int], list[int]]" = OrderedDict()
    for index in sorted(set(indices)):
        groups.setdefault(sizes[index], []).append(index)
    return [index for group in groups.values() for index in group]


def encoding_share(sizes: Sequence[tuple[int, int]], indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The pictures of `indices` that process `rank` encodes: every world_size-th of the encoding
    order, so each process gets about its part of every size group. A pure function: any process
    can tell any process's share, before a pixel is resized."""
    return encoding_order(sizes, indices)[rank::world_size]


def encode_shared(examples: Sequence[TrainingExample], indices: Sequence[int], encode: Encode,
                  processes: Processes, chunk: int = 4) -> SharedEncoding:
    """The latent distribution of every picture in `indices` (or, with several processes, in the
    union of every process's `indices`), each process encoding only its share, `chunk` pictures
    of one size per VAE call. A collective: every process calls it, with an empty list if it
    needs nothing. Only this process's share has its pixels asked for (pixels_to_encode)."""
    sizes = [example.size for example in examples]
    if processes.world_size == 1:
        order = encoding_order(sizes, indices)
        return SharedEncoding(_encode_pictures(examples, order, encode, chunk), tuple(order))
    wanted = torch.tensor(sorted(set(indices)), dtype=torch.int64, device=processes.exchange_device())
    union = sorted({int(i) for part in processes.all_gather_tensors([wanted])[0] for i in part.tolist()})
    order = encoding_order(sizes, union)
    latents: dict[int, Encoded] = {}
    mine: list[int] = []
    for start in range(0, len(order), EXCHANGE_ROUND_PICTURES):
        # this round's part of encoding_share(): the positions that are this process's in the whole order
        end = min(start + EXCHANGE_ROUND_PICTURES, len(order))
        share = [order[p] for p in range(start, end) if p % processes.world_size == processes.rank]
        latents.update(_exchanged(_encode_pictures(examples, share, encode, chunk, keep_device=True), processes))
        mine.extend(share)
    return SharedEncoding(latents, tuple(mine))


def _encode_pictures(examples: Sequence[TrainingExample], order: Sequence[int], encode: Encode, chunk: int,
                     keep_device: bool = False) -> dict[int, Encoded]:
    """Each picture of `order` encoded, in runs of at most `chunk` pictures of one size, fp32;
    on the CPU, or where the VAE gave them (`keep_device`, for the exchange)."""
    encoded: dict[int, Encoded] = {}
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < chunk and examples[order[end]].size == examples[order[start]].size:
            end += 1
        part = order[start:end]
        mean, std = encode(torch.cat([examples[i].pixels_to_encode() for i in part]))
        for row, index in enumerate(part):
            encoded[index] = (_kept(mean[row:row + 1], keep_device),
                              None if std is None else _kept(std[row:row + 1], keep_device))
        start = end
    return encoded


def _kept(latent: torch.Tensor, keep_device: bool) -> torch.Tensor:
    return latent.float() if keep_device else latent.to(_CPU, torch.float32)


def _exchanged(encoded: dict[int, Encoded], processes: Processes) -> dict[int, Encoded]:
    """Every process's `encoded` on every process, fp32 on the CPU: one buffer of values and one
    table (index, channels, height, width, has std) per process, gathered together."""
    device = processes.exchange_device()
    rows, values = [], []
    for index, (mean, std) in encoded.items():
        channels, height, width = mean.shape[1:]
        rows.append([index, channels, height, width, int(std is not None)])
        values.extend([mean.reshape(-1)] + ([] if std is None else [std.reshape(-1)]))
    table = torch.tensor(rows, dtype=torch.int64).reshape(-1, 5).to(device)
    flat = torch.cat(values).to(device) if values else torch.zeros(0, device=device)
    tables, buffers = processes.all_gather_tensors([table.reshape(-1), flat])
    received: dict[int, Encoded] = {}
    for their_table, their_values in zip(tables, buffers):
        received.update(_unpacked(their_table.to(_CPU).reshape(-1, 5), their_values.to(_CPU)))
    return received


def _unpacked(table: torch.Tensor, values: torch.Tensor) -> dict[int, Encoded]:
    """One process's round: its table's pictures cut out of its buffer (copies, so a picture's
    latent does not keep the whole round's buffer alive)."""
    pictures: dict[int, Encoded] = {}
    offset = 0
    for index, channels, height, width, has_std in table.tolist():
        size = channels * height * width
        mean = values[offset:offset + size].reshape(1, channels, height, width).clone()
        offset += size
        std = None
        if has_std:
            std = values[offset:offset + size].reshape(1, channels, height, width).clone()
            offset += size
        pictures[index] = (mean, std)
    return pictures
