"""Preparing a big folder in chunks: which files a chunk loads, and what the dataset folder
records so that chunks saved one after another add up to the folder a one-shot run writes.

Load Images cuts its (sorted, offset/limit) file list into chunks of `chunk_size` files and
loads one; each queue run takes the next, so memory holds one chunk, never the folder. Save
Dataset, told the chunk, numbers its files after the chunks before it: it reads their counts
from a small record in the dataset folder (`.hypernet_chunks.json`, hidden so trainers skip it)
and writes chunk k's names there afterwards. Names therefore never depend on what else lies in
the folder, a re-run of chunk k rewrites chunk k's files only, and a run that would write over
another chunk's file is refused before anything is written."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TypeVar

from ..errors import InputError
from ..files import atomic_write_text

RECORD_NAME = ".hypernet_chunks.json"
_Item = TypeVar("_Item")


@dataclass(frozen=True)
class Chunk:
    """Chunk `index` (0-based) of `count`, each `size` files of the `files` selected."""

    index: int
    count: int
    size: int
    files: int

    @property
    def first(self) -> int:
        """Position of the chunk's first file in the selection."""
        return self.index * self.size

    def describe(self) -> str:
        """"chunk 3 of 10: files 201-300 of 1000; 7 left" (numbered from 1, as people count)."""
        last = min(self.first + self.size, self.files)
        left = self.count - self.index - 1
        after = f"{left} left: queue again for the next" if left else "the last one"
        return f"chunk {self.index + 1} of {self.count}: files {self.first + 1}-{last} of {self.files}; {after}"


def chunk_count(files: int, size: int) -> int:
    """How many chunks of `size` files `files` files make (at least one; size 0 = one chunk)."""
    return 1 if size <= 0 or files <= 0 else -(-files // size)


def check_chunk(index: int, files: int, size: int) -> None:
    """InputError for 'chunk' when `index` is past the last chunk of `files` files."""
    count = chunk_count(files, size)
    if size > 0 and index >= count:
        raise InputError("chunk", f"is {index}, past the last chunk: the {files} selected files make {count} "
                                  f"chunk(s) of {size}, numbered 0-{count - 1}; set chunk to 0 to start over")


def select_chunk(items: list[_Item], size: int, index: int) -> tuple[list[_Item], Optional[Chunk]]:
    """The items of chunk `index` and its Chunk; size 0 = every item and no chunk (one-shot)."""
    if size <= 0:
        return items, None
    check_chunk(index, len(items), size)
    chunk = Chunk(index=index, count=chunk_count(len(items), size), size=size, files=len(items))
    return items[chunk.first:chunk.first + size], chunk


class ChunkRecord:
    """The dataset folder's record of the chunks saved into it: their cut and their file names."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / RECORD_NAME
        self.cut: Optional[dict[str, int]] = None  # {"size", "files"} of the chunks recorded
        self.names: dict[int, list[str]] = {}  # chunk index -> file stems it wrote
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.cut = {"size": int(data["size"]), "files": int(data["files"])}
            self.names = {int(k): [str(n) for n in v] for k, v in data["chunks"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError("folder", f"{self.path} is not a chunk record this pack wrote ({exc}); move it away "
                                       "or save into a new folder") from None

    def first_index(self, chunk: Chunk, numbered: bool) -> int:
        """Where chunk `chunk`'s numbering starts: after every file of the chunks before it.

        Refuses (InputError for 'chunk') a chunk cut differently from those recorded, and with
        numbered names a chunk whose predecessors are not all saved yet."""
        cut = {"size": chunk.size, "files": chunk.files}
        if self.cut is not None and self.names and self.cut != cut:
            raise InputError("chunk", f"this run cuts {chunk.files} files into chunks of {chunk.size}, but "
                                      f"{self.path.parent} holds chunks of {self.cut['size']} from {self.cut['files']} "
                                      "files: save into a new folder (or one with the same cut)")
        if not numbered:
            return 0
        missing = [index for index in range(chunk.index) if index not in self.names]
        if missing:
            raise InputError("chunk", f"chunk {missing[0]} is not saved in {self.path.parent} yet: numbered names "
                                      "(naming index-stem or index) follow the chunks before, so save chunks in "
                                      "order from 0, or use naming 'stem'")
        return sum(len(self.names[index]) for index in range(chunk.index))

    def check_names(self, chunk: Chunk, names: list[str], numbered: bool) -> None:
        """Refuse names another chunk wrote, and a changed count that would shift later chunks."""
        theirs = {name: index for index, written in self.names.items() if index != chunk.index for name in written}
        clash = next((name for name in names if name in theirs), None)
        if clash is not None:
            raise InputError("chunk", f"{clash}.png was written by chunk {theirs[clash]}: this chunk would overwrite "
                                      "it; give the pictures distinct names, or save into a new folder")
        later = [index for index in self.names if index > chunk.index]
        before = self.names.get(chunk.index)
        if numbered and later and before is not None and len(before) != len(names):
            raise InputError("chunk", f"chunk {chunk.index} now makes {len(names)} pictures where it made "
                                      f"{len(before)}, and chunks after it are numbered from that count: re-run from "
                                      "this chunk into a new folder, or use naming 'stem'")

    def record(self, chunk: Chunk, names: list[str]) -> None:
        """Write chunk `chunk`'s names into the record (atomically, after its files)."""
        self.cut = {"size": chunk.size, "files": chunk.files}
        self.names[chunk.index] = list(names)
        data = {**self.cut, "chunks": {str(index): self.names[index] for index in sorted(self.names)}}
        atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")

    def all_names(self) -> set[str]:
        """Every file stem any recorded chunk wrote."""
        return {name for written in self.names.values() for name in written}


def chunk_from(value: object) -> Optional[Chunk]:
    """A chunk as passed between nodes: a Chunk, or None for a load of the whole selection."""
    if value is None or isinstance(value, Chunk):
        return value
    raise InputError("chunk", f"expected the chunk of a folder loaded in chunks, got {type(value).__name__}")
