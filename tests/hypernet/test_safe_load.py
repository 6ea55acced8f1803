"""Every loader reads weight files without running their code, and its errors name the file, say
why in plain words, and never advise an unsafe step (weights_only=False, allow-listing globals)."""
import datetime
import pickle

import pytest
import torch

from hypernet_studio.hypernet import safe_load
from hypernet_studio.hypernet.file_format import HypernetFileError, load_hypernetwork
from hypernet_studio.hypernet.sd.components import CheckpointError
from hypernet_studio.hypernet.sd.ldm_layout import read_state_dict
from hypernet_studio.hypernet.taggers.deepbooru import read_deepbooru_file

UNSAFE_ADVICE = ("weights_only", "add_safe_globals", "safe_globals", "allowlist", "\x1b[")


class _Runs:
    """Unpickling this calls print(): the kind of file weights_only refuses."""

    def __reduce__(self):
        return (print, ("code ran",))


def _bad_files(folder):
    evil_global = folder / "global.pt"
    torch.save({"x": _Runs()}, evil_global)
    plain_object = folder / "object.pt"
    plain_object.write_bytes(pickle.dumps({"w": datetime.date(2020, 1, 1)}, protocol=2))
    garbage = folder / "garbage.ckpt"
    garbage.write_bytes(b"\x7fsecret first bytes of some file")
    truncated = folder / "truncated.pt"
    torch.save({"w": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    huge_header = folder / "huge.safetensors"
    huge_header.write_bytes(b"\xff" * 16)
    short = folder / "short.safetensors"
    short.write_bytes(b"\x01\x00")
    return [evil_global, plain_object, garbage, truncated, huge_header, short]


LOADERS = {
    "hypernetwork": (load_hypernetwork, HypernetFileError),
    "checkpoint": (read_state_dict, CheckpointError),
    "deepbooru": (read_deepbooru_file, ValueError),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_errors_name_the_file_and_give_no_unsafe_advice(tmp_path, loader, capsys):
    load, error_type = LOADERS[loader]
    for path in _bad_files(tmp_path):
        if loader == "hypernetwork" and path.suffix == ".ckpt":
            path = path.rename(path.with_suffix(".pt"))
        with pytest.raises(error_type) as caught:
            load(path)
        message = str(caught.value)
        assert str(path) in message or path.name in message, message
        assert not any(advice in message for advice in UNSAFE_ADVICE), message
        assert "secret first bytes" not in message and "\\x7f" not in message, message
    assert "code ran" not in capsys.readouterr().out


def test_reasons_keep_the_cause_and_drop_the_advice(tmp_path):
    path = tmp_path / "global.pt"
    torch.save({"x": _Runs()}, path)
    with pytest.raises(safe_load.UnreadableFile) as caught:
        safe_load.load_torch_weights(path)
    message = str(caught.value)
    assert "print" in message and "refused" in message
    with pytest.raises(safe_load.UnreadableFile, match="not a valid safetensors file"):
        safe_load.check_safetensors_header(_bad_files(tmp_path)[4])


def test_a_valid_safetensors_header_passes_the_cheap_check(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "ok.safetensors"))
    safe_load.check_safetensors_header(tmp_path / "ok.safetensors")
