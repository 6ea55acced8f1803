"""The CLIP tokenizer, from local files only (nothing is downloaded).

The CLIP tokenizer comes from local files only, searched in this order: a `tokenizer/`
folder beside the checkpoint, `vocab.json` + `merges.txt` beside it, then each folder in
`tokenizer_dirs` (the runtime passes `models/tokenizers`) as `<dir>/<family>/`, `<dir>/clip/`
or `<dir>/` itself, and finally CLIP's BPE file `bpe_simple_vocab_16e6.txt.gz` in those
folders or bundled with an installed `open_clip` package. A folder counts when it has
`vocab.json` + `merges.txt` or a `tokenizer.json`.
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Union

from .components import CheckpointError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
PathLike = Union[str, Path]


def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable-character table of byte-level BPE (GPT-2/CLIP)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table



def tokenizer_from_bpe_file(path: PathLike, pad_token: str = "<|endoftext|>") -> "CLIPTokenizer":
    """A CLIPTokenizer built from CLIP's `bpe_simple_vocab_16e6.txt.gz` (vocab and merges
    are derived from the merge list exactly as CLIP's reference tokenizer does)."""
    from transformers import CLIPTokenizer

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1] if line.strip()]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges] + \
        ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token)
    tokenizer.model_max_length = 77
    return tokenizer


def _bundled_bpe_file() -> Optional[Path]:
    """CLIP's BPE file shipped inside an installed open_clip package (found, not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / BPE_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


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
    for folder in folders:
        if (folder / BPE_FILE_NAME).is_file():
            return tokenizer_from_bpe_file(folder / BPE_FILE_NAME, pad_token)
    bundled = _bundled_bpe_file()
    if bundled is not None:
        return tokenizer_from_bpe_file(bundled, pad_token)
    searched = ", ".join(str(f) for f in folders) or "(no folders)"
    raise CheckpointError(
        f"no CLIP tokenizer found for this {family.upper()} checkpoint (nothing is downloaded). Put CLIP's "
        f"tokenizer files (vocab.json and merges.txt, e.g. the 'tokenizer' folder of any SD1.5/SD2 diffusers "
        f"model) into models/tokenizers/{family}/ or beside the checkpoint, or '{BPE_FILE_NAME}' into "
        f"models/tokenizers/. Searched: {searched}")
