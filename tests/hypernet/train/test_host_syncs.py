"""An optimizer step reads one value back from the device, however many micro-batches it has.

Reading a device value (Tensor.item(), float(), bool(), int(), tolist()) makes the host wait for
the device; once per micro-batch, the host could not queue the next micro-batch's work while
the GPU runs this one. No GPU here, so the reads themselves are counted."""
import pytest
import torch

from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.tiny import build_tiny_components
from hypernet_studio.hypernet.sd.tiny_sdxl import build_tiny_sdxl_components
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train import run as run_module
from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig
from hypernet_studio.hypernet.train.run import train_hypernetwork

from .fakes import tiny_dataset

_READS = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__")


@pytest.mark.parametrize("build", [build_tiny_components, build_tiny_sdxl_components], ids=["sd1", "sdxl"])
def test_an_optimizer_step_of_four_micro_batches_reads_the_device_once(build, monkeypatch):
    reads, inside = [], [False]
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            if inside[0]:
                reads.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counting)
    step = run_module.TrainingRun.optimizer_step

    def counted_step(self, learn_rate):
        inside[0] = True
        try:
            return step(self, learn_rate)
        finally:
            inside[0] = False
    monkeypatch.setattr(run_module.TrainingRun, "optimizer_step", counted_step)

    model, clip, vae = headless_objects(build(seed=0))
    backend = DiffusersBackend(model, clip, vae)
    spec = HypernetSpec(activation="relu", weight_init="XavierNormal", sizes=None, dropout_structure=[0, 0.1, 0])
    network = Hypernetwork.build(spec, sizes=backend.attention_widths(), seed=1, name="syncs")
    images, captions = tiny_dataset(2, size=64)
    config = TrainConfig(name="syncs", steps=2, learning_rate="0.001", seed=3, templates=["a [filewords]"],
                         csv_every=0, save_every=0, preview_every=0, gradient_accumulation=4, shuffle_tags=True,
                         latent_sampling="random", min_snr_gamma=5.0, clip_grad_mode="norm", clip_grad_value="1.0")
    result = train_hypernetwork(backend, network, prepare_examples(images, captions, resolution=64), config)
    assert len(result.losses) == 2
    assert len(reads) == 2, reads  # one per optimizer step
