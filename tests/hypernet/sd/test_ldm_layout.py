"""Reading a single file's tensors: weights only, whatever the container."""
import pytest
import torch

from hypernet_studio.hypernet.sd.components import CheckpointError
from hypernet_studio.hypernet.sd.ldm_layout import read_state_dict
from hypernet_studio.hypernet.sd.loading import load_components


def test_ckpt_loads_weights_only_and_matches_safetensors(sd1_file):
    path, state = sd1_file
    from_ckpt = load_components(path.with_suffix(".ckpt"))
    torch.testing.assert_close(from_ckpt.unet.state_dict()["conv_out.weight"],
                               state["model.diffusion_model.out.2.weight"])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    import pickle

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": Payload()}}, str(path), pickle_module=pickle)
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        read_state_dict(path)
