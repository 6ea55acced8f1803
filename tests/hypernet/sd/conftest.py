"""Checkpoint files the loading tests share, written once per session (each loads in about a second)."""
import pytest
import torch

from hypernet_studio.hypernet.sd.loading import load_components

from .ldm_files import sd1_state_dict, write_tokenizer_files
from .sgm_files import SMALL, random_state, sgm_shapes


@pytest.fixture(scope="session")
def sd1_file(tmp_path_factory):
    """(an SD1 .safetensors file with tokenizer files beside it, its state dict); the same
    tensors are also saved as a .ckpt with the state dict wrapped, as LDM's trainer saves it."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("ckpt")
    state = sd1_state_dict()
    save_file(state, str(folder / "tiny15.safetensors"))
    torch.save({"state_dict": state, "global_step": 1}, str(folder / "tiny15.ckpt"))
    write_tokenizer_files(folder)
    return folder / "tiny15.safetensors", state


@pytest.fixture(scope="session")
def sdxl_file(tmp_path_factory):
    """(a reduced SDXL base single file in the SGM layout, its state dict)."""
    from safetensors.torch import save_file

    state = random_state(sgm_shapes(SMALL))
    path = tmp_path_factory.mktemp("sdxl") / "tiny_xl.safetensors"
    save_file(state, str(path))
    return path, state


@pytest.fixture(scope="session")
def sdxl_components(sdxl_file):
    return load_components(sdxl_file[0])
