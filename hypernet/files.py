"""Safe paths and atomic writes, shared by every module that writes files."""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]
# The longest file or folder name common file systems take (ext4, APFS: 255 bytes; NTFS: 255 UTF-16 units).
MAX_NAME_BYTES = 255


class UnsafePathError(ValueError):
    """A user-supplied name would escape its folder."""


def natural_key(text: str) -> list:
    """Sort key where "img2" < "img10" (digit runs compare as numbers), case-insensitive."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def check_name_text(name: str, reserve: int = 0) -> None:
    """Refuse what no file system takes, before any path is built from `name`: a NUL character,
    or a name part longer than MAX_NAME_BYTES less `reserve` (what the caller appends to it)."""
    if "\0" in name:
        raise UnsafePathError(f"{name!r} holds a NUL character, which no file name may contain")
    for part in name.replace("\\", "/").split("/"):
        if len(part.encode("utf-8")) + reserve > MAX_NAME_BYTES:
            raise UnsafePathError(f"{part[:24]!r}... is {len(part)} characters long; a file name can be at most "
                                  f"{MAX_NAME_BYTES - reserve} (bytes, UTF-8) here")


def safe_join(base: PathLike, name: str) -> Path:
    """Join a user-supplied relative `name` under `base`, refusing anything that escapes it.

    Absolute names, drive letters and `..` components are refused outright (not normalised
    away), so a typo never writes somewhere unexpected."""
    if not name or not str(name).strip():
        raise UnsafePathError("empty file name")
    check_name_text(str(name))
    text = str(name).replace("\\", "/")
    if text.startswith("/") or os.path.isabs(name) or (len(text) > 1 and text[1] == ":"):
        raise UnsafePathError(f"absolute paths are not allowed: {name!r}")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePathError(f"'..' is not allowed in {name!r}")
    base_path = Path(base).resolve()
    target = base_path.joinpath(*parts).resolve()
    if target != base_path and base_path not in target.parents:
        raise UnsafePathError(f"{name!r} escapes {base_path}")
    return target


@contextlib.contextmanager
def atomic_path(final: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it replaces `final` atomically.

    The temporary file is created with mode 0666 less the user's umask (0644 under umask 022), as
    a plain `open()` would, so the result is readable where the user's other files are. A writer
    that replaces the temporary file with one of its own (safetensors writes mode 0600) gets that
    mode back. On any exception the temporary file is removed and `final` is left untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temporary_file(final)
    umask_mode = stat.S_IMODE(tmp_path.stat().st_mode)  # read, not os.umask(): that is process-wide
    try:
        yield tmp_path
        if stat.S_IMODE(tmp_path.stat().st_mode) != umask_mode:
            os.chmod(tmp_path, umask_mode)
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _new_temporary_file(final: Path) -> Path:
    """An empty, newly created file beside `final` (never an existing one)."""
    while True:
        candidate = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue


def atomic_write_bytes(final: PathLike, data: bytes) -> Path:
    """Write `data` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `final` atomically."""
    return atomic_write_bytes(final, text.encode(encoding))


def next_free_path(folder: PathLike, stem: str, suffix: str) -> Path:
    """`folder/stem.suffix`, or `stem_00001.suffix`... if taken: never overwrite silently."""
    folder = Path(folder)
    candidate = folder / f"{stem}{suffix}"
    counter = 1
    while candidate.exists():
        candidate = folder / f"{stem}_{counter:05d}{suffix}"
        counter += 1
    return candidate
