"""Every random draw of training: seeds derived from (run seed, purpose, step, ...), and the noise
and timesteps drawn from them. Each draw is a pure function of its seed, so a resumed run replays
exactly the draws an unbroken run makes, however many processes share the work."""
from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator, Sequence

import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from `seed` and any labels/indices (stable across processes and platforms)."""
    text = ":".join([str(int(seed))] + [str(p) for p in parts])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU torch.Generator seeded from `derive_seed(seed, *parts)`."""
    return torch.Generator("cpu").manual_seed(derive_seed(seed, *parts))


def draw_noise(shape: Sequence[int], generator: torch.Generator, noise_offset: float = 0.0) -> torch.Tensor:
    """eps ~ N(0, I), plus `noise_offset` times one N(0, 1) value per sample and channel when on
    (drawn after eps from the same generator, so the default draws are A1111's)."""
    noise = torch.randn(shape, generator=generator)
    if noise_offset > 0:
        noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator)
    return noise


def draw_sample(draws: torch.Generator, num_train_timesteps: int, latent_shape: Sequence[int],
                noise_offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's timestep [1] and noise [1, C, h, w], in that order, from its own generator."""
    timestep = torch.randint(0, num_train_timesteps, (1,), generator=draws)
    return timestep, draw_noise((1, *latent_shape[-3:]), draws, noise_offset)


def micro_batch_draws(seed: int, number: int, positions: Sequence[int], num_train_timesteps: int,
                      latent_shape: Sequence[int], noise_offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps [n] and noise [n, C, h, w] of the samples at `positions` of micro-batch
    `number`, each from its own seed (run seed, micro-batch, position in the global micro-batch),
    so the draws do not depend on how many processes share the micro-batch."""
    timesteps, noises = zip(*(draw_sample(generator(seed, "noise", number, position), num_train_timesteps,
                                          latent_shape, noise_offset)
                              for position in positions))
    return torch.cat(timesteps), torch.cat(noises)


@contextlib.contextmanager
def seeded_torch_rng(device: torch.device, seed: int, *parts: object) -> Iterator[None]:
    """torch's global RNG (the CPU's, and `device`'s when it is a GPU) seeded from
    `derive_seed(seed, *parts)` inside the block, and restored after it: for draws torch makes
    itself, such as dropout masks."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, *parts))
        yield
