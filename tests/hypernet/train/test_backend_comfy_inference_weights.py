"""ComfyUI loads checkpoints under torch.inference_mode(), so the UNet weights it hands to the
trainer are inference tensors. Found by training inside a real ComfyUI: autograd refused them."""
import torch

from hypernet_studio.hypernet.train.backend_comfy import ComfyBackend
from hypernet_studio.hypernet.train.run import train_hypernetwork

from .fake_comfy import comfy_objects
from .test_run import _config, _examples, _network


def test_training_works_when_the_checkpoint_was_loaded_under_inference_mode():
    with torch.inference_mode():
        model, clip, vae = comfy_objects()
        # What ComfyUI's loader leaves behind: every weight created inside inference mode.
        for module in model.model.diffusion_model.modules():
            for name, parameter in list(module._parameters.items()):
                if parameter is not None:
                    module._parameters[name] = torch.nn.Parameter(parameter.detach().clone())
    assert all(p.is_inference() for p in model.model.diffusion_model.parameters())
    reference_weights = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}

    with torch.inference_mode(False), torch.enable_grad():
        result = train_hypernetwork(ComfyBackend(model, clip, vae), _network(), _examples(4), _config(steps=3))

    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    # Same values for every other node of the graph: only the storage was swapped.
    for key, value in model.model.diffusion_model.state_dict().items():
        assert torch.equal(value, reference_weights[key]), key
