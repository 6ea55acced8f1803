"""Training over a UNet stored in fp16 (as the headless loader and ComfyUI load it on CUDA). With
precision fp32 the UNet computes in fp16, so the gradient scaler must be on, or the small
gradients flowing back through it underflow to zero. With precision bf16 the headless backend
stores the UNet in bf16 for the run, so autocast has no weight to re-cast.

Both runs hold the same stored weights (fp16 values; the reference upcast to fp32), so only the
compute dtype differs: random weights amplify any change of the weights themselves
(research note gpu-review-2026-12). The loss is scaled by 1e-3, which puts the hypernetwork's
largest gradient at about 1.5e-5, below the ~4e-5 an SD1 UNet's prediction gets at 512 px."""
import copy

import torch

from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.tiny import build_tiny_components
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train import run as run_module
from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend
from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig

from .fakes import tiny_dataset

LOSS_SCALE = 1e-3
# fp16 compute keeps about 3 decimal digits per op; measured 0.3 % with the scaler (73 % without).
RELATIVE_TOLERANCE = 2e-2


def _gradients(components, precision="fp32", unet_dtypes=None):
    """The hypernetwork's gradients (unscaled) after one micro-batch, and whether the scaler was on;
    `unet_dtypes` collects the dtype the UNet is stored in when each block runs."""
    model, clip, vae = headless_objects(components)
    backend = DiffusersBackend(model, clip, vae)
    spec = HypernetSpec(activation="relu", weight_init="XavierNormal", sizes=None)
    network = Hypernetwork.build(spec, sizes=backend.attention_widths(), seed=1, name="fp16")
    images, captions = tiny_dataset(2, size=64)
    config = TrainConfig(name="fp16", steps=1, learning_rate="0.001", seed=3, templates=["a [filewords]"],
                         csv_every=0, save_every=0, preview_every=0, batch_size=2, precision=precision)
    run = run_module.TrainingRun(backend, network, prepare_examples(images, captions, resolution=64), config)
    run.prepare()
    if unet_dtypes is not None:
        backend.components.unet.conv_in.register_forward_pre_hook(
            lambda module, args: unet_dtypes.append(module.weight.dtype))
    with backend.session(False):
        run.micro_step(0)
    state = run.state
    if state.scaler.is_enabled():
        state.scaler.unscale_(state.optimizer)
    assert all(p.dtype == torch.float32 for p in network.parameters())  # fp32 master weights
    return torch.cat([p.grad.flatten() for p in network.parameters()]), state.scaler.is_enabled()


def test_fp16_weights_with_precision_fp32_train_with_a_gradient_scaler(monkeypatch):
    loss = run_module.diffusion_loss
    monkeypatch.setattr(run_module, "diffusion_loss", lambda *args, **kwargs: loss(*args, **kwargs) * LOSS_SCALE)
    stored_fp16 = build_tiny_components(seed=0, dtype=torch.float16)
    computed_fp32 = copy.copy(stored_fp16)
    for name in stored_fp16.module_names():
        setattr(computed_fp32, name, copy.deepcopy(getattr(stored_fp16, name)).float())
    reference, reference_scaled = _gradients(computed_fp32)
    gradients, scaled = _gradients(stored_fp16)
    assert not reference_scaled and scaled
    assert float(reference.abs().max()) < 4e-5  # the regime where unscaled fp16 gradients underflow
    # Entries the reference holds above fp32's rounding noise (a sum that cancels to ~1e-14 is a
    # zero that came out otherwise) must not be zero.
    significant = reference.abs() > 1e-6 * float(reference.abs().max())
    underflowed = int(((gradients == 0) & significant).sum())
    assert underflowed == 0
    relative = float((gradients - reference).norm() / reference.norm())
    assert relative < RELATIVE_TOLERANCE, relative


def _fp16_and_fp32_copies():
    stored_fp16 = build_tiny_components(seed=0, dtype=torch.float16)
    computed_fp32 = copy.copy(stored_fp16)
    for name in stored_fp16.module_names():
        setattr(computed_fp32, name, copy.deepcopy(getattr(stored_fp16, name)).float())
    return stored_fp16, computed_fp32


# bf16 keeps 8 significant bits per op (fp16 11): measured 1.2 % against fp32 compute (bf16
# autocast over the same weights stored in fp32: 1.5 %).
BF16_RELATIVE_TOLERANCE = 5e-2
# bf16's resolution: a sum of terms the size of the largest gradient rounds to a multiple of about
# 2^-8 of it, so entries below that may cancel to zero in bf16 compute (27 do with fp32-stored
# weights too), which is rounding, not underflow (bf16 has fp32's range).
BF16_RESOLUTION = 2.0 ** -8


def test_bf16_over_fp16_weights_stores_the_unet_in_bf16_for_the_session(monkeypatch):
    """Precision bf16 over fp16-stored weights: the session stores the UNet in bf16, so autocast
    has nothing to re-cast (and the CPU's autocast runs at all: its GroupNorm refuses fp16
    weights under bf16), the gradients stay near fp32 compute with none underflowed, and the
    fp16 weights come back bit for bit."""
    loss = run_module.diffusion_loss
    monkeypatch.setattr(run_module, "diffusion_loss", lambda *args, **kwargs: loss(*args, **kwargs) * LOSS_SCALE)
    stored_fp16, computed_fp32 = _fp16_and_fp32_copies()
    before = {name: tensor.clone() for name, tensor in stored_fp16.unet.state_dict().items()}
    reference, _ = _gradients(computed_fp32)
    unet_dtypes = []
    gradients, scaled = _gradients(stored_fp16, precision="bf16", unet_dtypes=unet_dtypes)
    assert not scaled  # bf16 has fp32's range
    assert unet_dtypes == [torch.bfloat16]
    after = stored_fp16.unet.state_dict()
    assert all(after[name].dtype == torch.float16 and torch.equal(after[name], before[name]) for name in before)
    significant = reference.abs() > BF16_RESOLUTION * float(reference.abs().max())
    assert int(((gradients == 0) & significant).sum()) == 0
    relative = float((gradients - reference).norm() / reference.norm())
    assert relative < BF16_RELATIVE_TOLERANCE, relative
