"""The persistent cache of what training encodes: each picture's latent distribution and each
distinct prompt's text conditioning, kept on disk so that a second run, a resume, another spec or
another learning rate encodes nothing again (docs/datasets.md, The latent cache).

The folder holds safetensors shards and one small index:

    index.json                   per shard: its bytes, checksum, last use and the keys it holds
    shard-<random>.safetensors   tensors named KEY.mean, KEY.std, KEY.context, KEY.pooled
    cache.lock                   the writers' lock (filelock: an OS lock, so Windows too)

Keys are content hashes. A picture's key hashes the exact pixels handed to the VAE (or the
picture's `cache_identity` where its example has one) with the VAE's identity: a hash of its
weights and whatever else changes its output (the latent scale, the dtype, and whether it gives
the distribution or, as ComfyUI's, the mean only). A prompt's key hashes the prompt with the text
encoder's identity (its weights, its layer, ...). So a changed picture, VAE or setting misses; it
never finds another's latent. The distribution is stored rather than the `once` sample, so the
seed and the latent sampling mode are not in the key.

Shards are written whole to a temporary file and renamed (never changed afterwards); the index is
replaced atomically under the lock. A shard whose size or checksum disagrees with the index is
dropped and its pictures encoded again. Beyond the size limit, the shards used longest ago go
first (never one this run uses). Hits are memory-mapped: a run's host memory holds the index and
the batch it is gathering, not the whole set."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from filelock import FileLock

from ..files import atomic_path, atomic_write_text
from .batches import TrainingExample

logger = logging.getLogger(__name__)

CACHE_FOLDER = "hypernet_cache"  # the default folder, under the output folder
CACHE_OFF = "off"  # the cache_folder value that turns the cache off
CACHE_LIMIT_ENV = "HYPERNET_STUDIO_CACHE_MB"  # the size limit in MB (default CACHE_LIMIT_MB)
CACHE_LIMIT_MB = 20_000
SHARD_ENTRIES = 256  # entries per shard: few files for big sets, little lost to a crash
INDEX_VERSION = 1
_INDEX, _LOCK, _SHARD_PREFIX = "index.json", "cache.lock", "shard-"
_LOCK_TIMEOUT_S = 600.0  # another writer holds the lock at most for the shards it writes
_STALE_S = 3600.0  # a temporary or unindexed file this old was left by a crash: removed
_MB = 1_000_000
_SAFETENSORS_DTYPES = {"F32": np.float32}
Entry = dict[str, torch.Tensor]  # a key's tensors by role: mean/std (a picture), context/pooled (a prompt)

_WEIGHT_DIGESTS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of every weight and buffer of `module` (names, dtypes, shapes, bytes), computed once
    per module object: different weights never share it."""
    known = _WEIGHT_DIGESTS.get(module)
    if known is not None:
        return known
    digest = hashlib.blake2b(digest_size=20)
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    _WEIGHT_DIGESTS[module] = digest.hexdigest()
    return _WEIGHT_DIGESTS[module]


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes as stored (any dtype, bf16 and fp8 included), on the CPU."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data


def identity_text(*parts: object) -> str:
    """One string from the parts that make an encoder's identity."""
    return "|".join(str(part) for part in parts)


def _key(*parts: object) -> str:
    digest = hashlib.blake2b(digest_size=20)
    for part in parts:
        digest.update(str(part).encode("utf-8") + b"\0")
    return digest.hexdigest()


def picture_identity(example: TrainingExample) -> str:
    """What identifies the picture a latent is made of: its `cache_identity` when the example has
    one (a folder picture), else a hash of the exact pixels handed to the VAE."""
    identity = getattr(example, "cache_identity", None)
    if identity is not None:
        return f"id:{identity}"
    pixels = example.pixels_to_encode()
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{pixels.dtype}|{tuple(pixels.shape)}|".encode())
    digest.update(_tensor_bytes(pixels))
    return f"pixels:{digest.hexdigest()}"


@dataclass
class CacheFigures:
    """What a run found and added: the report line's figures."""

    hits: int = 0  # pictures
    encoded: int = 0
    prompt_hits: int = 0
    prompts_encoded: int = 0
    bytes: int = 0  # the cache's size after the run's writes
    limit: int = 0

    def line(self) -> str:
        """e.g. "cache: 200 hits, 0 encoded (prompts: 3 hits, 0 encoded), 6.6 MB of 20000 MB"."""
        return (f"cache: {self.hits} hits, {self.encoded} encoded (prompts: {self.prompt_hits} hits, "
                f"{self.prompts_encoded} encoded), {self.bytes / _MB:.1f} MB of {self.limit / _MB:.0f} MB")


class EncodingCache:
    """One run's view of a cache folder, for one VAE and one text encoder (their identities; None
    where an encoder cannot be identified, which leaves its part uncached)."""

    def __init__(self, folder: Path, limit_bytes: int, vae_identity: Optional[str], clip_identity: Optional[str]):
        self.folder, self.limit_bytes = Path(folder), int(limit_bytes)
        self.vae_identity, self.clip_identity = vae_identity, clip_identity
        self.figures = CacheFigures(limit=self.limit_bytes)
        self.in_use: set[str] = set()  # shards this run reads: never evicted by it
        self.checked: dict[str, bool] = {}  # shard -> whether it matched its index entry
        self.mapped: dict[str, dict[str, torch.Tensor]] = {}  # shard -> its tensors, memory-mapped
        self.failed: Optional[str] = None  # why the folder could not be used: the run goes on without it

    # ------------------------------------------------------------------ keys
    def picture_keys(self, examples: Sequence[TrainingExample]) -> list[str]:
        """Each example's latent key (the bucket size is in it: one picture, several sizes)."""
        return [_key("latent", self.vae_identity, picture_identity(e), *e.size) for e in examples]

    def prompt_keys(self, prompts: Sequence[str]) -> list[str]:
        return [_key("text", self.clip_identity, prompt) for prompt in prompts]

    # ------------------------------------------------------------------ reading
    def find(self, keys: Sequence[str]) -> dict[str, Entry]:
        """The entries of `keys` the cache holds in shards that check out, memory-mapped."""
        with self._guarded():
            with self._locked():
                shards = self._read_index()["shards"]
        if self.failed is not None:
            return {}
        where = {key: name for name, shard in shards.items() for key in shard["keys"]}
        found: dict[str, Entry] = {}
        for key in dict.fromkeys(keys):
            name = where.get(key)
            if name is None or not self._usable(name, shards[name]):
                continue
            tensors = self.mapped[name]
            entry = {role: tensors[f"{key}.{role}"] for role in ("mean", "std", "context", "pooled")
                     if f"{key}.{role}" in tensors}
            if entry:
                found[key] = entry
                self.in_use.add(name)
        return found

    def _usable(self, name: str, shard: Mapping[str, Any]) -> bool:
        """Whether shard `name` is whole (its size and checksum as indexed); mapped if so."""
        if name not in self.checked:
            path = self.folder / name
            try:
                good = path.stat().st_size == shard["bytes"] and _checksum(path) == shard["checksum"]
                if good:
                    self.mapped[name] = _mapped_tensors(path)
                else:
                    logger.warning("cache shard %s is truncated or corrupt: its entries are encoded again", path)
            except (ValueError, KeyError, OSError) as exc:
                logger.warning("cache shard %s is missing or unreadable (%s): its entries are encoded again", path, exc)
                good = False
            self.checked[name] = good
        return self.checked[name]

    # ------------------------------------------------------------------ writing
    def put(self, entries: Mapping[str, Entry]) -> None:
        """Add the entries the cache lacks, as shards, and drop what the limit leaves no room for.
        Under the lock: two writers never interleave, and a key another writer just added is skipped."""
        if not entries or self.failed is not None:
            return
        with self._guarded(), self._locked():
            index = self._read_index()
            present = {key for name, shard in index["shards"].items() if self.checked.get(name, True)
                       for key in shard["keys"]}
            missing = [key for key in entries if key not in present]
            for start in range(0, len(missing), SHARD_ENTRIES):
                part = missing[start:start + SHARD_ENTRIES]
                name, size, checksum = self._write_shard({k: entries[k] for k in part})
                index["shards"][name] = {"bytes": size, "checksum": checksum, "used": time.time(), "keys": part}
                self.in_use.add(name)
            self._settle(index)

    def touch(self) -> None:
        """Record this run's use of its shards (they go last when the limit evicts), drop shards
        found corrupt, evict beyond the limit, and take the size for the report."""
        if self.failed is None:
            with self._guarded(), self._locked():
                self._settle(self._read_index())

    def _settle(self, index: dict) -> None:
        shards = index["shards"]
        now = time.time()
        for name in self.in_use & set(shards):
            shards[name]["used"] = now
        dropped = [name for name, good in self.checked.items() if not good and name in shards]
        total = sum(shard["bytes"] for shard in shards.values())
        for name in sorted(set(shards) - self.in_use, key=lambda n: shards[n]["used"]):
            if total <= self.limit_bytes:
                break
            dropped.append(name)
            total -= shards[name]["bytes"]
        for name in dropped:
            shards.pop(name, None)
        atomic_write_text(self.folder / _INDEX, json.dumps(index))
        for name in dropped:
            _remove(self.folder / name)
        self._remove_leftovers(set(shards))
        self.figures.bytes = sum(shard["bytes"] for shard in shards.values())

    def _write_shard(self, entries: Mapping[str, Entry]) -> tuple[str, int, str]:
        """A new shard holding `entries` (fp32, CPU); its name, size and checksum."""
        from safetensors.torch import save_file

        tensors = {f"{key}.{role}": tensor.detach().to("cpu", torch.float32).contiguous()
                   for key, entry in entries.items() for role, tensor in entry.items()}
        name = f"{_SHARD_PREFIX}{secrets.token_hex(8)}.safetensors"
        with atomic_path(self.folder / name) as temporary:
            save_file(tensors, str(temporary))
            size, checksum = temporary.stat().st_size, _checksum(temporary)
        return name, size, checksum

    def _remove_leftovers(self, indexed: set[str]) -> None:
        """Temporary files and unindexed shards a crash left behind, once they are old."""
        limit = time.time() - _STALE_S
        for path in self.folder.iterdir():
            left = path.name.endswith(".tmp") or (path.name.startswith(_SHARD_PREFIX) and path.name not in indexed)
            with contextlib.suppress(OSError):
                if left and path.stat().st_mtime < limit:
                    path.unlink()

    # ------------------------------------------------------------------ the index
    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """A folder that cannot be written (full, gone, read-only) turns the cache off for the rest
        of the run with a warning: training does not need it."""
        try:
            yield
        except OSError as exc:
            self.failed = str(exc)
            logger.warning("the cache folder %s cannot be used (%s): this run goes on without it", self.folder, exc)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder / _LOCK), timeout=_LOCK_TIMEOUT_S):
            yield

    def _read_index(self) -> dict:
        """The index (call under the lock); an unreadable one starts the cache afresh."""
        path = self.folder / _INDEX
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            if index.get("version") == INDEX_VERSION and isinstance(index.get("shards"), dict):
                return index
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            logger.warning("cache index %s is unreadable (%s): starting the cache afresh", path, exc)
        return {"version": INDEX_VERSION, "shards": {}}


def _checksum(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mapped_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's fp32 tensors as read-only memory maps of the file (no copy):
    pages are read when a batch touches them."""
    with open(path, "rb") as file:
        header_size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(header_size))
    header.pop("__metadata__", None)
    if not header:
        return {}
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        array = data[start:end].view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
        with _quiet_readonly_warning():
            tensors[name] = torch.from_numpy(array)
    return tensors


@contextlib.contextmanager
def _quiet_readonly_warning() -> Iterator[None]:
    """torch warns that a read-only array gives a tensor it must not write to; none is ever written."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        yield


def _remove(path: Path) -> None:
    """Delete a dropped shard; on Windows a shard another run has mapped cannot go yet, and the next
    writer's clean-up takes it once it is unindexed and old."""
    with contextlib.suppress(OSError):
        path.unlink()


def open_cache(backend: Any, folder: Optional[Path],
               environ: Optional[Mapping[str, str]] = None) -> Optional[EncodingCache]:
    """The run's cache in `folder` (None: off) for `backend`'s encoders; a backend that cannot
    name an encoder's identity (no `vae_identity`/`clip_identity`) leaves that part uncached."""
    if folder is None:
        return None
    identities = []
    for method in ("vae_identity", "clip_identity"):
        identify = getattr(backend, method, None)
        identities.append(identify() if callable(identify) else None)
    return EncodingCache(folder, cache_limit_bytes(environ), identities[0], identities[1])


def cache_limit_bytes(environ: Optional[Mapping[str, str]] = None) -> int:
    """The size limit: CACHE_LIMIT_ENV in MB, or CACHE_LIMIT_MB."""
    text = (os.environ if environ is None else environ).get(CACHE_LIMIT_ENV, "").strip()
    try:
        megabytes = float(text) if text else CACHE_LIMIT_MB
    except ValueError:
        logger.warning("%s=%r is not a number of MB: using %d", CACHE_LIMIT_ENV, text, CACHE_LIMIT_MB)
        megabytes = CACHE_LIMIT_MB
    return max(0, int(megabytes * _MB))
