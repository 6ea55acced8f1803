"""Training inside ComfyUI's model management: the UNet is loaded with room for activations,
and a CLIP encode or VAE decode that evicts it (moving the hypernetwork to the offload device
with the patcher's other patches) is followed by a reload before the UNet computes again."""
import pytest
import torch

from hypernet_studio.hypernet.train.backend_comfy import TRAINING_MEMORY_FACTOR, ComfyBackend
from hypernet_studio.hypernet.train.run import train_hypernetwork

from .fake_comfy import comfy_managed_objects, comfy_objects, comfy_openai_objects
from .test_run import _config, _examples, _network


def _managed_run(**options):
    model, clip, vae, management = comfy_managed_objects()
    backend = ComfyBackend(model, clip, vae, load_model=management.load_models_gpu_for_training)
    config = _config(steps=3, batch_size=2, **options)
    result = train_hypernetwork(backend, _network(), _examples(4), config)
    return result, backend, management


def _unet_calls_after_an_eviction_without_reload(events):
    """UNet calls that came after the UNet was evicted and before it was loaded again with its
    patches back on the training device."""
    unloaded, bad = False, 0
    for event, detail in events:
        if event == "evicted" and detail == "unet":
            unloaded = True
        elif event == "patches_to" and detail == "cpu":
            unloaded = False
        elif event == "unet" and unloaded:
            bad += 1
    return bad


@pytest.mark.parametrize("options", [dict(shuffle_tags=True),  # a CLIP encode every step
                                     dict(preview_every=1, preview_steps=2)])  # a VAE decode every step
def test_the_unet_is_reloaded_after_an_encode_or_decode_evicted_it(options, tmp_path):
    result, backend, management = _managed_run(**options) if "preview_every" not in options else \
        _managed_run(log_dir=tmp_path / "log", **options)
    events = management.events
    assert ("evicted", "unet") in events, "the stand-in's encode/decode evicts the UNet"
    assert _unet_calls_after_an_eviction_without_reload(events) == 0
    assert backend.reloads >= 2 and all(torch.isfinite(torch.tensor(result.losses)))
    # Every reload is a full training load asking for the same room as the first.
    training_loads = [memory for models, memory in management.calls if models[0].name == "unet"]
    assert len(training_loads) == backend.reloads + 1 and len(set(training_loads)) == 1


def test_the_unet_is_loaded_with_room_for_the_training_activations():
    _, backend, management = _managed_run()
    (models, memory_required), *_ = [call for call in management.calls if call[0][0].name == "unet"]
    batch_shape = (2, 4, 2, 2)  # batch 2 of 16 px pictures: 2x2 latents
    inference = 1000.0 * torch.tensor(batch_shape).prod().item()  # the stand-in's model.memory_required
    assert memory_required == pytest.approx(inference * TRAINING_MEMORY_FACTOR)
    assert memory_required > 0


@pytest.mark.parametrize("storage, manual_cast", [(torch.float8_e4m3fn, torch.float32),
                                                  (torch.float16, torch.float32),
                                                  (torch.float16, torch.bfloat16)])
def test_the_unet_computes_in_comfyuis_manual_cast_dtype(storage, manual_cast):
    """fp8 (or fp16 on a device without fp16 compute) storage: ComfyUI's layers cast each weight
    to the input's dtype, and apply_model feeds the UNet in manual_cast_dtype. The trainer must
    do the same, not cast the inputs to the storage dtype."""
    model, clip, vae = comfy_openai_objects()
    unet = model.model.diffusion_model
    reference_loss = _one_step_loss(*comfy_openai_objects())
    unet.store_weights_as(storage)
    model.model.manual_cast_dtype = manual_cast
    loss = _one_step_loss(model, clip, vae)
    assert {dtypes for dtypes in unet.seen_dtypes} == {(manual_cast, manual_cast)}
    # The weights' rounding to the storage dtype (e4m3: 2**-4 relative, fp16: 2**-11), plus bf16
    # compute (2**-8) where asked for. Seen here: 3e-2, 2.5e-4 and 1.9e-3.
    tolerance = {torch.float8_e4m3fn: 0.1, torch.float16: 2e-3}[storage]
    tolerance += 1e-2 if manual_cast == torch.bfloat16 else 0.0
    assert loss == pytest.approx(reference_loss, rel=tolerance)


def _one_step_loss(model, clip, vae):
    result = train_hypernetwork(ComfyBackend(model, clip, vae), _network(), _examples(2),
                                _config(steps=1, batch_size=2))
    return result.losses[0]


def test_without_manual_cast_the_unet_computes_in_its_weights_dtype():
    model, clip, vae = comfy_objects()
    model.model.manual_cast_dtype = None
    assert ComfyBackend(model, clip, vae).compute_dtype() == torch.float32
