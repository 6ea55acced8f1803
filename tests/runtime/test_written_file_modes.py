"""Issue 17: every file a run or a CLI command writes gets the mode the user's umask gives."""
import os
from pathlib import Path

import pytest

from hypernet_studio.runtime import cli
from hypernet_studio.runtime.headless_host import HEADLESS

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "train_hypernet.json"


@pytest.fixture
def restored_host():
    saved = {k: getattr(HEADLESS, k) for k in ("base_dir", "input_dir", "output_dir", "temp_dir", "models_dir",
                                                "device")}
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)
    for key, value in saved.items():
        setattr(HEADLESS, key, value)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits; Windows files have none")
@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_every_written_file_follows_the_umask(tmp_path, restored_host, capsys, mask, mode):
    from hypernet_studio.runtime.examples import write_examples

    os.umask(mask)
    write_examples(tmp_path)
    overrides = ["--set", "4.steps=2", "--set", "4.save_every=1", "--set", "4.preview_every=2",
                 "--set", "4.csv_every=1", "--set", "9.steps=1"]
    assert cli.main(["run", str(WORKFLOW), "--base-dir", str(tmp_path), "--quiet", *overrides]) == 0
    final = tmp_path / "models" / "hypernetworks" / "example-hypernet.pt"
    assert cli.main(["convert-hypernet", str(final), str(tmp_path / "converted.safetensors")]) == 0
    assert cli.main(["convert-hypernet", str(tmp_path / "converted.safetensors"), str(tmp_path / "back.pt")]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in written}
    assert {".pt", ".optim", ".csv", ".png", ".safetensors", ".txt"} <= kinds, kinds
    wrong = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in written
             if p.stat().st_mode & 0o777 != mode}
    assert not wrong, wrong
