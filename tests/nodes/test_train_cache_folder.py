"""Train Hypernet's cache_folder: resolved under the output folder, 'off' for none, and refused at
queue time (before any model loads) when it cannot be written or, on a shared server, lies outside
the folders the server may use."""
import pytest

from hypernet_studio.nodes import paths
from hypernet_studio.nodes.host import ALLOWED_DIRS_ENV
from hypernet_studio.nodes.train import TrainHypernetNode, train_config

NODE = TrainHypernetNode


def _verdict(cache_folder):
    # images and captions linked, as ComfyUI passes linked sockets: [None] (their values come later)
    return NODE.VALIDATE_INPUTS(name="net", learning_rate="0.001", clip_grad_mode="disabled", clip_grad_value="0.1",
                                prompt_template="style_filewords", custom_template="", optimizer="AdamW",
                                cache_folder=cache_folder, images=[None], captions=[None])


def test_the_default_is_under_the_output_folder_and_off_turns_it_off(headless_dirs):
    assert _verdict("hypernet_cache") is True
    config = train_config({"name": "net", "cache_folder": "hypernet_cache"})
    assert config.cache_dir == headless_dirs / "output" / "hypernet_cache"
    assert train_config({"name": "net", "cache_folder": "off"}).cache_dir is None
    assert train_config({"name": "net", "cache_folder": " "}).cache_dir is None
    assert train_config({"name": "net"}).cache_dir == headless_dirs / "output" / "hypernet_cache", "old workflows"
    assert _verdict(str(headless_dirs / "elsewhere" / "cache")) is True, "headless: any writable path"


def test_an_unwritable_cache_folder_is_refused_at_queue_time(headless_dirs, monkeypatch):
    blocker = headless_dirs / "output" / "a-file"
    blocker.write_text("not a folder")
    verdict = _verdict("a-file/cache")
    assert verdict.startswith("input 'cache_folder': ") and "cannot be written" in verdict
    assert "is a file, not a folder" in _verdict("a-file")
    read_only = headless_dirs / "output" / "read-only"
    read_only.mkdir()
    monkeypatch.setattr(paths.os, "access", lambda path, mode: paths.Path(path) != read_only)
    assert "cannot be written" in _verdict("read-only/cache")
    with pytest.raises(ValueError, match="cache_folder"):
        train_config({"name": "net", "cache_folder": "read-only"})


@pytest.mark.parametrize("folder", ["../cache", "{outside}", "{outside}/missing"])
def test_a_shared_server_refuses_a_cache_outside_its_folders(comfyui, tmp_path, folder, monkeypatch):
    outside = tmp_path / "private"
    outside.mkdir()
    folder = folder.format(outside=outside)
    verdict = _verdict(folder)
    assert verdict.startswith("input 'cache_folder': ") and folder in verdict
    assert "'..' is not allowed" in verdict or "outside the folders this server may use" in verdict
    assert _verdict("hypernet_cache") is True
    monkeypatch.setenv(ALLOWED_DIRS_ENV, str(outside))
    assert _verdict(str(outside / "cache")) is True, "the owner can allow more"
