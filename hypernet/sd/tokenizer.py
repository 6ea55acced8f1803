"""The CLIP tokenizer, from local files only (nothing is downloaded).

The CLIP tokenizer comes from local files only, searched in this order: a `tokenizer/`
folder beside the checkpoint, `vocab.json` + `merges.txt` beside it, then each folder in
`tokenizer_dirs` (the runtime passes `models/tokenizers`) as `<dir>/<family>/`, `<dir>/clip/`
or `<dir>/` itself, and finally CLIP's BPE file `bpe_simple_vocab_16e6.txt.gz` in those
folders, else the copy that comes with this pack (hypernet/sd/clip_vocab/). A folder counts when
it has `vocab.json` + `merges.txt` or a `tokenizer.json`. So a real SD1/SD2/SDXL checkpoint needs no
tokenizer files placed by hand; putting some in those folders overrides the bundled vocabulary.
"""
from __future__ import annotations

import copy
import functools
import gzip
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Union

from .components import CheckpointError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# CLIP's vocabulary ships with the pack (MIT, see clip_vocab/LICENSE.txt): SD1, SD2 and SDXL use it.
BUNDLED_BPE_FILE = Path(__file__).resolve().parent / "clip_vocab" / BPE_FILE_NAME
PathLike = Union[str, Path]


def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable-character table of byte-level BPE (GPT-2/CLIP), in CLIP's
    order: the printable bytes first, in byte order, then the others mapped to chr(256 + n). The
    order matters: CLIP's vocabulary numbers its 256 base symbols (and their word-final forms) in
    it, so "a</w>" is id 320."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    others = [byte for byte in range(256) if byte not in printable]
    table = {byte: chr(byte) for byte in printable}
    table.update({byte: chr(256 + index) for index, byte in enumerate(others)})
    return table


@functools.lru_cache(maxsize=8)
def _cached_bpe_tokenizer(path: str, pad_token: str, modified: float) -> "CLIPTokenizer":
    return _build_bpe_tokenizer(Path(path), pad_token)


def tokenizer_from_bpe_file(path: PathLike, pad_token: str = "<|endoftext|>") -> "CLIPTokenizer":
    """A CLIPTokenizer built from CLIP's `bpe_simple_vocab_16e6.txt.gz` (vocab and merges are
    derived from the merge list exactly as CLIP's reference tokenizer does). Built once per file."""
    path = Path(path)
    return copy.deepcopy(_cached_bpe_tokenizer(str(path.resolve()), pad_token, path.stat().st_mtime))


def _build_bpe_tokenizer(path: PathLike, pad_token: str) -> "CLIPTokenizer":
    from transformers import CLIPTokenizer

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1] if line.strip()]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges] + \
        ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = CLIPTokenizer(
        vocab=vocab, pad_token=pad_token,
        merges=merges,  # type: ignore[arg-type]  # transformers annotates list[str]; its BPE takes pairs
    )
    tokenizer.model_max_length = 77
    return tokenizer


def find_tokenizer(family: str, checkpoint: Optional[Path],
                   tokenizer_dirs: Iterable[PathLike] = ()) -> "CLIPTokenizer":
    """The CLIP tokenizer for `family` from local files (see the module docstring's order)."""
    from transformers import CLIPTokenizer

    pad_token = "!" if family == "sd2" else "<|endoftext|>"  # OpenCLIP pads with id 0 ("!")
    folders: list[Path] = []
    if checkpoint is not None:
        base = checkpoint if checkpoint.is_dir() else checkpoint.parent
        folders += [base / "tokenizer", base]
    for root in tokenizer_dirs:
        root = Path(root)
        folders += [root / family, root / "clip", root]
    for folder in folders:
        has_bpe_files = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
        if has_bpe_files or (folder / "tokenizer.json").is_file():
            tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
            if family == "sd2" and folder.name != "tokenizer":
                tokenizer.pad_token = pad_token
            tokenizer.model_max_length = 77
            return tokenizer
    for folder in [*folders, BUNDLED_BPE_FILE.parent]:
        if (folder / BPE_FILE_NAME).is_file():
            return tokenizer_from_bpe_file(folder / BPE_FILE_NAME, pad_token)
    searched = ", ".join(str(f) for f in folders) or "(no folders)"
    raise CheckpointError(
        f"no CLIP tokenizer found for this {family.upper()} checkpoint, and the vocabulary that comes with "
        f"this pack ({BUNDLED_BPE_FILE}) is missing: reinstall the pack. Searched: {searched}")
