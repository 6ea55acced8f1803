"""Atomic writes give files the mode the user's umask gives, like a plain open() would."""
import os

import pytest
import torch

from hypernet_studio.hypernet.file_format import write_torch_file
from hypernet_studio.hypernet.files import atomic_path, atomic_write_text


@pytest.fixture
def umask():
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(value):
        os.umask(value)
    yield set_umask
    os.umask(saved)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_umask_mode(tmp_path, umask, mask, mode):
    umask(mask)
    text = atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.pt") as tmp:
        write_torch_file({"w": torch.zeros(1)}, tmp)
    for path in (text, tmp_path / "b.pt"):
        assert os.stat(path).st_mode & 0o777 == mode, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.pt"], "no temporary file is left"


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_a_writer_that_replaces_the_temporary_file_still_gets_the_umask_mode(tmp_path, umask, mask, mode):
    """safetensors' save_file writes its own file, mode 0600, over the temporary one."""
    from safetensors.torch import save_file

    umask(mask)
    with atomic_path(tmp_path / "a.safetensors") as tmp:
        save_file({"w": torch.zeros(1)}, str(tmp))
    assert os.stat(tmp_path / "a.safetensors").st_mode & 0o777 == mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "keep.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
