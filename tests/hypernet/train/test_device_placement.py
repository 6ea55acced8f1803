"""A training step keeps every tensor it builds on the training device, and leaves the caches on
the CPU. The `meta` device stands in for a GPU (see tests/hypernet/sd/test_sampling_device.py):
torch raises when a CPU tensor meets a meta tensor in an op, as it does for a CUDA one."""
import pytest
import torch

from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.tiny import build_tiny_components
from hypernet_studio.hypernet.sd.tiny_sdxl import build_tiny_sdxl_components
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig
from hypernet_studio.hypernet.train.run import TrainingRun

from .fakes import tiny_dataset

META = torch.device("meta")


def _meta_run(build, **overrides):
    """A prepared TrainingRun whose UNet and hypernetwork are on the meta device. The images and
    prompts are encoded by CPU copies of the encoders (meta ones would give no values to cache)."""
    cpu_model, cpu_clip, cpu_vae = headless_objects(build(seed=0))
    model, _, _ = headless_objects(build(seed=0, device="meta"))
    backend = DiffusersBackend(model, cpu_clip, cpu_vae, device=META)
    backend.encode_images = DiffusersBackend(cpu_model, cpu_clip, cpu_vae).encode_images
    spec = HypernetSpec(activation="relu", weight_init="XavierNormal", sizes=None, dropout_structure=[0, 0.1, 0])
    network = Hypernetwork.build(spec, sizes=backend.attention_widths(), seed=1, name="meta")
    images, captions = tiny_dataset(2, size=64)
    masks = [torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(len(images))]
    examples = prepare_examples(images, captions, masks=masks, resolution=64)
    values = dict(name="meta", steps=2, learning_rate="0.001", seed=3, templates=["a [filewords]"], csv_every=0,
                  save_every=0, preview_every=0, batch_size=2, shuffle_tags=True, latent_sampling="random",
                  use_alpha_weight=True, min_snr_gamma=5.0, noise_offset=0.1)
    values.update(overrides)
    run = TrainingRun(backend, network, examples, TrainConfig(**values))
    run.prepare()
    return run, backend, network


@pytest.mark.parametrize("build", [build_tiny_components, build_tiny_sdxl_components], ids=["sd1", "sdxl"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_a_training_micro_batch_runs_on_the_device(build, checkpointing):
    run, backend, network = _meta_run(build)
    with backend.session(checkpointing):
        loss = run.micro_step(0)
    assert loss.device.type == "meta"
    grads = [p.grad for p in network.parameters()]
    assert all(g is not None and g.device.type == "meta" for g in grads)


def test_the_caches_hold_cpu_tensors_and_hand_out_device_batches():
    run, _, _ = _meta_run(build_tiny_components)
    state = run.state
    assert {t.device.type for t in state.latents.means + state.latents.stds + state.latents.weights} == {"cpu"}
    assert state.latents.latents([0, 1], 0).device.type == "meta"
    assert state.latents.loss_weights([0, 1]).device.type == "meta"
    assert state.texts.batch(["a cat", "a dog"]).device.type == "meta"
    assert len(state.texts.entries) >= 2 and {e.context.device.type for e in state.texts.entries.values()} == {"cpu"}
