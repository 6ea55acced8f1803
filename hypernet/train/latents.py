"""Where images become latents and captions become conditionings, once.

Images are encoded by the VAE once (per latent sampling mode) and each distinct prompt by
CLIP once; per step only cached tensors are gathered, unless tag shuffle/dropout makes a new
prompt. Every random draw is a pure function of (seed, purpose, index), see random_draws.py.

Both caches hold CPU tensors, whatever the training device: on a GPU its memory is for the model
and its activations (SDXL's 4,096 cached contexts alone would take 2.6 GB there). Each batch is
gathered on the CPU and moved to the device (host_copies.py: pinned, non-blocking on CUDA).

With a persistent cache (encoding_cache.py) both look their entries up first and encode only the
misses; the latents then come memory-mapped from its shards. Under torchrun the processes share
the misses' encoding (shared_encoding.py) and each writes what it encoded."""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..sd.components import Conditioning, TextConditioning
from .batches import TrainingExample
from .config import LATENT_SAMPLING_MODES
from .distributed import Processes, SingleProcess
from .host_copies import to_device
from .random_draws import generator
from .shared_encoding import encode_shared

if TYPE_CHECKING:
    from .encoding_cache import EncodingCache

logger = logging.getLogger(__name__)

# The text cache's bounds: the most prompts it keeps, and the most bytes of CPU memory their
# conditionings may take (about 1,700 SDXL contexts of 77 x 2048 fp32, 8,700 SD1.5 ones).
TEXT_CACHE_PROMPTS = 4096
TEXT_CACHE_BYTES = 1 << 30
_CPU = torch.device("cpu")
_Encoded = tuple[torch.Tensor, Optional[torch.Tensor]]  # a latent's mean and std (None: the VAE gives the mean)
# Pictures of the set per round of encoding into the persistent cache: a cold run holds at most one
# round's latents before writing them and reading them back memory-mapped.
CACHE_ROUND = 512


def alpha_loss_weight(alpha: Optional[torch.Tensor], latent_hw: tuple[int, int]) -> Optional[torch.Tensor]:
    """A1111's PNG-alpha loss weight at latent size [1,h,w]: w = a - min(a), then w / mean(w).

    A uniform alpha (where A1111 would divide by zero) gives uniform weight (None)."""
    if alpha is None:
        return None
    weight = F.interpolate(alpha[None].float(), size=latent_hw, mode="area")[0]
    weight = weight - weight.min()
    mean = weight.mean()
    if float(mean) <= 1e-8:
        return None
    return weight / mean


class LatentCache:
    """Scaled latents per example, encoded once.

    `once`: one sample per image, the same at every use (drawn from (seed, image) when used, so a
    cached distribution serves every seed); `deterministic`: the distribution's mean; `random`:
    mean + std * fresh noise for every use. Backends that only give the mean (std None) make all
    three modes the mean. Held on the CPU (memory-mapped from `cache` where it has them);
    latents() and loss_weights() give each batch on `device`. `processes` share the encoding."""

    def __init__(self, examples: Sequence[TrainingExample], encode: Callable, mode: str, seed: int,
                 device: torch.device, use_alpha_weight: bool = False, chunk: int = 4, *,
                 processes: Optional[Processes] = None, cache: Optional["EncodingCache"] = None):
        if mode not in LATENT_SAMPLING_MODES:
            raise InputError("latent_sampling", f"must be one of {', '.join(LATENT_SAMPLING_MODES)}, got {mode!r}")
        self.mode, self.seed, self.device = mode, seed, device
        self.means, self.stds = _encoded(examples, encode, chunk, processes, cache)
        if mode != "deterministic" and any(std is None for std in self.stds):
            logger.warning("latent sampling %r: this VAE's encode gives only the latent mean (ComfyUI's does), "
                           "so every image trains on its mean, as 'deterministic'", mode)
        if mode == "deterministic":
            self.stds = [None] * len(examples)
        self.weights = [alpha_loss_weight(example.training_alpha(), _latent_size(self.means[i])) if use_alpha_weight
                        else None for i, example in enumerate(examples)]
        self.weights = [None if w is None else w.to(_CPU) for w in self.weights]

    def _sample(self, index: int, *when: object) -> torch.Tensor:
        mean, std = self.means[index], self.stds[index]
        if std is None:
            return mean
        if self.mode == "once":
            when = ("once",)
        noise = torch.randn(mean.shape, generator=generator(self.seed, "latent", index, *when))
        return mean + std * noise

    def latents(self, indices: Sequence[int], micro_batch: object) -> torch.Tensor:
        """Latents [B,C,h,w] on the device for `indices` at global micro-batch `micro_batch` (the
        random mode's fresh draw is made on the CPU, so it is the same on every machine)."""
        return to_device(torch.cat([self._sample(i, micro_batch) for i in indices]), self.device)

    def loss_weights(self, indices: Sequence[int]) -> Optional[torch.Tensor]:
        """[B,1,h,w] weights, or None when no example in the batch has one."""
        if all(self.weights[i] is None for i in indices):
            return None
        shape = self.means[indices[0]].shape[-2:]
        weights = [self.weights[i] for i in indices]
        return to_device(torch.stack([weight if weight is not None else torch.ones(1, *shape) for weight in weights]),
                         self.device)



def _encoded(examples: Sequence[TrainingExample], encode: Callable, chunk: int, processes: Optional[Processes],
             cache: Optional["EncodingCache"]) -> tuple[list[torch.Tensor], list[Optional[torch.Tensor]]]:
    """Every example's latent mean and std (None when the VAE gives only the mean) [1,C,h,w],
    fp32 on the CPU: from `cache` where it has them, else encoded and added to it."""
    if cache is None or cache.vae_identity is None:
        encoded, _ = _encode_misses(examples, range(len(examples)), encode, chunk, processes)
    else:
        encoded = _through_cache(examples, encode, chunk, processes, cache)
    means = [encoded[i][0] for i in range(len(examples))]
    return means, [encoded[i][1] for i in range(len(examples))]


def _through_cache(examples: Sequence[TrainingExample], encode: Callable, chunk: int,
                   processes: Optional[Processes], cache: "EncodingCache") -> dict[int, _Encoded]:
    """Every process looks up before any writes; the misses are encoded (shared between the
    processes; a picture the set holds several times, once), stored, and read back memory-mapped,
    CACHE_ROUND pictures of the set at a time, so a cold run holds one round's latents at most."""
    keys = cache.picture_keys(examples)
    found = cache.find(keys)
    first = {key: index for index, key in reversed(list(enumerate(keys)))}  # each key's first example
    misses = sorted(index for key, index in first.items() if key not in found)
    unstored: dict[int, _Encoded] = {}  # what could not be read back (a cache that failed)
    for start in range(0, len(examples), CACHE_ROUND):  # the same rounds on every process
        round_misses = [index for index in misses if start <= index < start + CACHE_ROUND]
        unstored.update(_encode_and_store(examples, round_misses, keys, encode, chunk, processes, cache, found))
    cache.figures.hits += len(examples) - len(misses)  # a repeat of an encoded picture counts as a hit
    cache.figures.encoded += len(misses)
    return {i: (found[key]["mean"], found[key].get("std")) if key in found else unstored[first[key]]
            for i, key in enumerate(keys)}


def _encode_and_store(examples: Sequence[TrainingExample], misses: Sequence[int], keys: Sequence[str],
                      encode: Callable, chunk: int, processes: Optional[Processes], cache: "EncodingCache",
                      found: dict[str, dict[str, torch.Tensor]]) -> dict[int, _Encoded]:
    """Encode `misses` (a collective: every process calls it, each encodes its share), write what
    this process encoded, then, after a barrier, the first process of each machine writes what its
    cache still lacks (a cache on each machine's own disk); after another barrier every process
    reads the new entries back into `found`. Gives the latents that could not be read back."""
    encoded, here = _encode_misses(examples, misses, encode, chunk, processes)
    cache.put({keys[i]: _entry(encoded[i]) for i in here})
    if processes is not None:
        processes.barrier()
        if processes.local_rank == 0:
            cache.put({keys[i]: _entry(encoded[i]) for i in misses})
        processes.barrier()
    found.update(cache.find([keys[i] for i in misses]))
    return {i: encoded[i] for i in misses if keys[i] not in found}


def _entry(encoded: _Encoded) -> dict[str, torch.Tensor]:
    mean, std = encoded
    return {"mean": mean} if std is None else {"mean": mean, "std": std}


def _encode_misses(examples: Sequence[TrainingExample], indices: Sequence[int], encode: Callable, chunk: int,
                   processes: Optional[Processes]) -> tuple[dict[int, _Encoded], Sequence[int]]:
    """The latents of `indices` (with several processes, of every process's `indices`), each
    process encoding its share, and which of them this process encoded."""
    shared = encode_shared(examples, indices, encode, processes or SingleProcess(), chunk)
    return shared.latents, shared.encoded_here


def _latent_size(latent: torch.Tensor) -> tuple[int, int]:
    """(h, w) of a latent [..., h, w]."""
    height, width = latent.shape[-2:]
    return height, width


class TextCache:
    """Text conditionings per distinct prompt, encoded in batches: the context [T,D] and, for SDXL,
    the pooled output [1280] with it (TextConditioning). Held on the CPU, least recently used
    first out beyond `capacity` prompts or `max_bytes`; batch() gives each batch on `device`."""

    def __init__(self, encode_texts: Callable[[list[str]], Union[torch.Tensor, list, TextConditioning]],
                 device: torch.device, capacity: int = TEXT_CACHE_PROMPTS, max_bytes: int = TEXT_CACHE_BYTES):
        self.encode_texts, self.device, self.capacity, self.max_bytes = encode_texts, device, capacity, max_bytes
        self.entries: "OrderedDict[str, TextConditioning]" = OrderedDict()
        self.encoded = 0
        self.bytes = 0  # what the entries hold

    def warm(self, prompts: Sequence[str]) -> None:
        """Encode every prompt not cached yet, in one call."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self.entries]
        if missing:
            with torch.no_grad():  # per-step prompts (shuffle/dropout) must not record CLIP for backward
                conds = _per_prompt(self.encode_texts(missing))
            self.encoded += len(missing)
            for prompt, cond in zip(missing, conds):
                entry = TextConditioning(cond.context.detach().to(_CPU, torch.float32),
                                         None if cond.pooled is None else cond.pooled.detach().to(_CPU, torch.float32))
                self.entries[prompt] = entry
                self.bytes += _size(entry)
        for prompt in prompts:
            self.entries.move_to_end(prompt)
        # The prompts just asked for stay, even past the bounds: the batch needs them.
        while len(self.entries) > len(prompts) and (len(self.entries) > self.capacity or self.bytes > self.max_bytes):
            self.bytes -= _size(self.entries.popitem(last=False)[1])

    def warm_through(self, prompts: Sequence[str], cache: Optional["EncodingCache"], writes: bool) -> None:
        """warm(), taking from `cache` what it holds and, where this process `writes`, adding to it
        what had to be encoded."""
        prompts = list(dict.fromkeys(prompts))
        if cache is None or cache.clip_identity is None:
            self.warm(prompts)
            return
        keys = dict(zip(prompts, cache.prompt_keys(prompts)))
        found = cache.find(list(keys.values()))
        for prompt, key in keys.items():
            if key in found and prompt not in self.entries:
                entry = TextConditioning(found[key]["context"], found[key].get("pooled"))
                self.entries[prompt] = entry
                self.bytes += _size(entry)
        missing = [prompt for prompt in prompts if prompt not in self.entries]
        self.warm(prompts)
        if writes:
            cache.put({keys[p]: _text_entry(self.entries[p]) for p in missing if p in self.entries})
        cache.figures.prompt_hits += len(prompts) - len(missing)
        cache.figures.prompts_encoded += len(missing)

    def batch(self, prompts: Sequence[str]) -> Conditioning:
        """The batch's conditioning: the stacked contexts [B,T,D], or for SDXL a TextConditioning
        with the pooled outputs [B,1280] too. Shorter contexts (a prompt over 75 tokens encodes
        to several 77-token chunks) are padded by repeating their last vector, as A1111 does."""
        self.warm(prompts)
        entries = [self.entries[p] for p in prompts]
        length = max(e.context.shape[0] for e in entries)
        context = torch.stack([c if c.shape[0] == length else torch.cat([c, c[-1:].expand(length - c.shape[0], -1)])
                               for c in (e.context for e in entries)])
        pooled = [e.pooled for e in entries if e.pooled is not None]
        if not pooled:
            return to_device(context, self.device)
        if len(pooled) != len(entries):  # one backend encodes every prompt alike
            raise RuntimeError("the text encoder gave a pooled output for some prompts only")
        return TextConditioning(to_device(context, self.device), to_device(torch.stack(pooled), self.device))


def _text_entry(entry: TextConditioning) -> dict[str, torch.Tensor]:
    return {"context": entry.context} if entry.pooled is None else {"context": entry.context, "pooled": entry.pooled}


def _size(entry: TextConditioning) -> int:
    """The bytes an entry holds."""
    tensors = [entry.context] + ([] if entry.pooled is None else [entry.pooled])
    return sum(t.numel() * t.element_size() for t in tensors)


def _per_prompt(encoded: Union[torch.Tensor, list, TextConditioning]) -> list[TextConditioning]:
    """A backend's encoding of several prompts, one TextConditioning per prompt."""
    if isinstance(encoded, TextConditioning):
        pooled = encoded.pooled
        return [TextConditioning(encoded.context[i], None if pooled is None else pooled[i])
                for i in range(encoded.context.shape[0])]
    return [item if isinstance(item, TextConditioning) else TextConditioning(item) for item in encoded]
