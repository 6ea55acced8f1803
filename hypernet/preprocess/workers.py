"""Prep on every core: per-picture work (decoding, focal detection, resizing) in a pool of threads.

Threads, not processes: Pillow's decoders and resamplers, OpenCV's detectors and numpy's array
maths release the GIL, so threads scale with cores (bench/scale_prep_workers.py measures it), and
they share the pictures without copying them; a process would need each 4-MP float picture
pickled to it and back (about 50 MB each way) and a fresh import of the pack (spawn, as Windows
requires). Results come back in the order of the items, so the output is the same as with one
worker, and at most a few items per worker are in flight, so memory does not grow with the list.

The number of workers is the server owner's choice, not the workflow's (a widget would travel
with a shared workflow to a machine with other cores): the environment variable
HYPERNET_STUDIO_WORKERS, default the cores this process may use; 1 runs everything in-process,
in the caller's thread."""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from itertools import islice
from typing import Optional, TypeVar

from ..errors import InputError

WORKERS_ENV = "HYPERNET_STUDIO_WORKERS"
# More threads than this only adds memory: no machine the pack runs on has more cores.
MAX_WORKERS = 1024
# Items submitted ahead per worker: enough that a worker never waits for the consumer, few
# enough that the pictures in flight stay a handful per core.
ITEMS_AHEAD_PER_WORKER = 2

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class WorkersSettingError(InputError):
    """HYPERNET_STUDIO_WORKERS holds something that is not a number of workers. It is a server
    setting, not a node input, so the message names the variable as a setting."""

    def __init__(self, value: str, message: str):
        super().__init__(WORKERS_ENV, message)
        self.args = (f"setting {WORKERS_ENV}={value!r}: {message}",)


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says), at least 1."""
    process_cpu_count: Optional[Callable[[], Optional[int]]] = getattr(os, "process_cpu_count", None)
    if process_cpu_count is not None:  # Python 3.13+
        count = process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):  # Linux
        count = len(os.sched_getaffinity(0))
    else:  # Windows, macOS before 3.13
        count = os.cpu_count()
    return max(1, count or 1)


def workers_setting(environ: Optional[Mapping[str, str]] = None) -> int:
    """The number of prep workers: $HYPERNET_STUDIO_WORKERS, or the machine's cores when unset or
    empty. Raises WorkersSettingError for anything but a whole number from 1 to MAX_WORKERS."""
    value = (os.environ if environ is None else environ).get(WORKERS_ENV, "")
    if not value.strip():
        return machine_cores()
    explain = f"set a whole number of workers from 1 (in-process) to {MAX_WORKERS}, or unset it to use " \
              f"all {machine_cores()} cores of this machine"
    try:
        count = int(value.strip())
    except ValueError:
        raise WorkersSettingError(value, f"not a whole number; {explain}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise WorkersSettingError(value, f"out of range; {explain}")
    return count


def check_workers_setting() -> None:
    """For VALIDATE_INPUTS: refuse a bad HYPERNET_STUDIO_WORKERS before any picture is read."""
    workers_setting()


def imap_in_workers(function: Callable[[_Item], _Result], items: Iterable[_Item],
                    workers: Optional[int] = None) -> Generator[_Result, None, None]:
    """`function` applied to each item, yielded in the items' order, `workers` at a time
    (None: workers_setting()). With 1 worker, or one item, it runs in the caller's thread.

    An exception from `function` is raised where its item's result would be yielded. Closing
    the iterator early (the consumer raised, e.g. the host's interrupt from a progress bar)
    cancels the items not started and waits only for the ones running. `function` must be
    thread-safe: give each thread its own copy of any stateful model (see faces.py)."""
    count = workers_setting() if workers is None else workers
    if count < 1:
        raise ValueError(f"workers must be at least 1, got {count}")
    source = iter(items)
    first = list(islice(source, 2))
    if count == 1 or len(first) < 2:
        for item in first:
            yield function(item)
        for item in source:
            yield function(item)
        return
    yield from _pooled(function, first, source, count)


def _pooled(function: Callable[[_Item], _Result], first: list[_Item], rest: Iterator[_Item],
            count: int) -> Generator[_Result, None, None]:
    """imap_in_workers with a thread pool: a bounded window of futures, taken in order."""
    pending: deque[Future[_Result]] = deque()
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="hypernet-prep") as pool:
        try:
            for item in first + list(islice(rest, count * ITEMS_AHEAD_PER_WORKER - len(first))):
                pending.append(pool.submit(function, item))
            while pending:
                result = pending.popleft().result()
                for item in islice(rest, 1):
                    pending.append(pool.submit(function, item))
                yield result
        finally:
            for future in pending:
                future.cancel()


def map_in_workers(function: Callable[[_Item], _Result], items: Iterable[_Item], workers: Optional[int] = None,
                   on_done: Optional[Callable[[int], None]] = None) -> list[_Result]:
    """imap_in_workers as a list. `on_done(n)` is called in the caller's thread after the n-th
    result (for a progress bar, which may raise the host's interrupt: the pool then stops)."""
    results: list[_Result] = []
    with closing(imap_in_workers(function, items, workers)) as mapped:
        for result in mapped:
            results.append(result)
            if on_done is not None:
                on_done(len(results))
    return results
