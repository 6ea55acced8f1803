"""The latent cache with ComfyUI's own VAE class (comfy.sd.VAE, a small random-weight AutoencoderKL
built here): a second run encodes nothing, another VAE misses, the key says "mean only"; and
ComfyUI's queue-time validation refuses a cache folder outside the server's folders."""
import json
import uuid

import pytest
import torch

from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.backend_comfy import ComfyBackend
from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig
from hypernet_studio.hypernet.train.run import train_hypernetwork
from tests.hypernet.train.fake_comfy import comfy_objects
from tests.hypernet.train.fakes import CHANNELS, CONTEXT

from .conftest import run
from .test_pack_in_comfyui import training_prompt  # noqa: F401 - the fixture

pytestmark = pytest.mark.comfyui
SMALL_VAE = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
             "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def _comfy_vae(seed):
    """ComfyUI's VAE around a small AutoencoderKL; ComfyUI builds layers uninitialised, so every
    weight is drawn here."""
    import comfy.sd

    vae = comfy.sd.VAE(sd={}, config={"params": {"ddconfig": dict(SMALL_VAE), "embed_dim": 4}})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in vae.first_stage_model.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else parameter.numel()
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in ** 0.5)
    encodes = []
    encode = vae.encode

    def counted(pixels):
        encodes.append(int(pixels.shape[0]))
        return encode(pixels)

    vae.encode = counted
    return vae, encodes


def _train(vae, folder):
    model, clip, _ = comfy_objects()
    images = [torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    examples = prepare_examples(images, ["red, square", "blue, circle"], None, resolution=64)
    config = TrainConfig(name="net", steps=1, learning_rate="0.0001", seed=7, save_every=0, preview_every=0,
                         csv_every=0, templates=["[filewords]"], cache_dir=folder)
    network = Hypernetwork.build(HypernetSpec(sizes=[CHANNELS, CONTEXT]), seed=0, name="net")
    backend = ComfyBackend(model, clip, vae)
    with torch.inference_mode(False):
        return train_hypernetwork(backend, network, examples, config), backend


def test_a_second_run_with_comfyuis_vae_encodes_nothing(comfyui, tmp_path):
    vae, encodes = _comfy_vae(0)
    first, backend = _train(vae, tmp_path)
    assert sum(encodes) == 2 and (first.cache.hits, first.cache.encoded) == (0, 2)
    second, _ = _train(vae, tmp_path)
    assert sum(encodes) == 2 and (second.cache.hits, second.cache.encoded) == (2, 0)
    assert second.losses == first.losses
    identity = backend.vae_identity()
    assert "mean-only" in identity and str(vae.vae_dtype) in identity
    other, other_encodes = _comfy_vae(1)
    _train(other, tmp_path)
    assert sum(other_encodes) == 2, "another VAE's weights miss"


def test_comfyui_refuses_a_cache_folder_outside_its_folders_at_queue_time(comfyui, training_prompt,  # noqa: F811
                                                                         tmp_path):
    (node_id,) = [key for key, node in training_prompt.items() if node["class_type"] == "HN_TrainHypernet"]
    training_prompt[node_id]["inputs"]["cache_folder"] = str(tmp_path / "elsewhere")
    valid, error, outputs, node_errors = run(comfyui.execution.validate_prompt(str(uuid.uuid4()), training_prompt,
                                                                               None))
    # ComfyUI still queues the outputs that do not depend on the refused node (Hypernet Spec's size).
    assert {training_prompt[output]["class_type"] for output in outputs} <= {"HN_HypernetSpec"}
    messages = json.dumps(node_errors[node_id]["errors"])
    assert "input 'cache_folder'" in messages and "outside the folders this server may use" in messages
