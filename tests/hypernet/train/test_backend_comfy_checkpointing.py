"""Gradient checkpointing in ComfyUI's call pattern: the UNet runs its blocks through
forward_timestep_embed(module, ...), which calls each block's children itself, so wrapping a
block's own forward checkpoints nothing. These tests route a stand-in UNet exactly that way."""
import pytest
import torch

from hypernet_studio.hypernet.train.backend_comfy import ComfyBackend
from hypernet_studio.hypernet.train.run import train_hypernetwork

from .fake_comfy import PeakMemory, comfy_openai_objects
from .test_run import _config, _examples, _network


def _train(gradient_checkpointing, steps=2, examples=None, **options):
    model, clip, vae = comfy_openai_objects()
    config = _config(steps=steps, batch_size=2, optimizer="SGD", learning_rate="0.05",
                     gradient_checkpointing=gradient_checkpointing, **options)
    result = train_hypernetwork(ComfyBackend(model, clip, vae), _network(), examples or _examples(4), config)
    return result, model.model.diffusion_model


def test_checkpointing_recomputes_every_layer_comfyui_calls():
    plain, plain_unet = _train(False)
    checkpointed, unet = _train(True)
    # Without checkpointing each layer runs once per training UNet call (one per step here);
    # with it, once more in the backward pass. Today's wrapper on the blocks' forward never runs.
    assert [layer.calls for layer in plain_unet.block_layers()] == [2] * 11
    # The first layer runs before the first attention, so no gradient flows through it and
    # the backward pass has nothing to recompute there.
    assert [layer.calls for layer in unet.block_layers()] == [2] + [4] * 10
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-6)
    trained, expected = (torch.cat([p.flatten() for p in result.hypernetwork.parameters()])
                         for result in (checkpointed, plain))
    torch.testing.assert_close(trained, expected, rtol=1e-5, atol=1e-6)
    # The shared model comes back as it was: no instance-level forward left on any layer.
    assert not any("forward" in module.__dict__ for module in unet.modules())


def test_checkpointing_lowers_peak_memory_on_the_cpu():
    """Activations live in RAM on the CPU, so checkpointing must show in the peak of the step."""
    peaks = {}
    for gradient_checkpointing in (False, True):
        examples = _big_examples()
        with PeakMemory() as tracker:
            _train(gradient_checkpointing, steps=1, examples=examples)
        peaks[gradient_checkpointing] = tracker.peak
    print(f"peak CPU memory of one step: {peaks[False] / 2**20:.1f} MiB without checkpointing, "
          f"{peaks[True] / 2**20:.1f} MiB with")
    assert peaks[True] < 0.8 * peaks[False]


def _big_examples():
    from hypernet_studio.hypernet.train.batches import prepare_examples

    from .fakes import tiny_dataset

    images, captions = tiny_dataset(4, size=256)
    return prepare_examples(images, captions, None, resolution=256, multiple=8)
