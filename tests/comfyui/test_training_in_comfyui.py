"""Training through ComfyUI's own SD1.5 UNet (its openaimodel.UNetModel, BaseModel and
ModelPatcher, loaded by its model management), random weights built here: gradient
checkpointing must wrap what ComfyUI's UNet calls, and lower the step's peak memory.

The text encoder and VAE are small stand-ins (a fixed random context per prompt, pooled
pixels as latents): checkpointing concerns the UNet only."""
import hashlib

import pytest
import torch

from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.backend_comfy import ComfyBackend
from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig
from hypernet_studio.hypernet.train.run import train_hypernetwork
from tests.hypernet.train.fake_comfy import PeakMemory

from .conftest import SD15_UNET, random_weights_patcher

pytestmark = pytest.mark.comfyui
_CHECKPOINT = torch.utils.checkpoint.checkpoint  # the real one, counted through a stand-in per run


@pytest.fixture(scope="module")
def sd15_patcher(comfyui):
    import comfy.supported_models

    return random_weights_patcher(comfyui, comfy.supported_models.SD15(dict(SD15_UNET)))


class StandInCLIP:
    def tokenize(self, text):
        return text

    def encode_from_tokens(self, text, return_pooled=False):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(seed))


class StandInVAE:
    def encode(self, pixels):
        x = pixels.movedim(-1, 1)
        return torch.nn.functional.avg_pool2d(torch.cat([x, x.mean(1, keepdim=True)], 1) * 2 - 1, 8)


def _train_once(comfyui, patcher, gradient_checkpointing, monkeypatch):
    from hypernet_studio.nodes.comfy_host import ComfyHost

    calls = []

    def counting_checkpoint(function, *args, **kwargs):
        calls.append(getattr(function, "__qualname__", ""))
        return _CHECKPOINT(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
    spec = HypernetSpec(layer_structure=[1, 2, 1], activation="linear", sizes=[768, 320, 640, 1280])
    network = Hypernetwork.build(spec, seed=0, name="net")
    images = [torch.rand(1, 256, 256, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    examples = prepare_examples(images, ["red, square", "blue, circle"], None, resolution=256, multiple=64)
    config = TrainConfig(name="net", steps=1, batch_size=1, learning_rate="0.0001", seed=7, save_every=0,
                         preview_every=0, templates=["[filewords]"], gradient_checkpointing=gradient_checkpointing)
    backend = ComfyBackend(patcher, StandInCLIP(), StandInVAE(), load_model=ComfyHost().load_model_for_training)
    comfyui.model_management.unload_all_models()
    with torch.inference_mode(False), PeakMemory() as tracker:
        result = train_hypernetwork(backend, network, examples, config)
    return result, tracker.peak, calls


def test_checkpointing_runs_in_comfyuis_unet_and_lowers_peak_memory(comfyui, sd15_patcher, monkeypatch):
    plain, plain_peak, plain_calls = _train_once(comfyui, sd15_patcher, False, monkeypatch)
    checkpointed, peak, calls = _train_once(comfyui, sd15_patcher, True, monkeypatch)
    print(f"\nComfyUI SD1.5 UNet, 256 px, batch 1, fp32 on {comfyui.model_management.get_torch_device()}: "
          f"peak memory of a training step {plain_peak / 2**20:.0f} MiB without checkpointing, "
          f"{peak / 2**20:.0f} MiB with ({peak / plain_peak:.2f}x); {len(calls)} checkpointed layer calls")
    assert plain_calls == []
    # SD1.5's 12 input, 3 middle and 12 output blocks hold 25 ResBlocks, 16 SpatialTransformers,
    # 3 Downsamples, 3 Upsamples and the first conv: every one is called through the wrapper.
    assert len(calls) >= 25 + 16
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-4)
    assert peak < 0.7 * plain_peak
