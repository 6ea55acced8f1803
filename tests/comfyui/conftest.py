"""The opt-in real-ComfyUI suite (`pytest -m comfyui tests/comfyui`, docs/compatibility.md).

ComfyUI runs in-process: its checkout, named by HYPERNET_STUDIO_COMFYUI, goes first on
sys.path (its top-level `nodes` module would otherwise lose to this repository's `nodes/`
folder), and it is told it has no GPU before anything imports comfy.model_management. The
interpreter must have ComfyUI's requirements and ours (the harness venv has both)."""
from __future__ import annotations

import asyncio
import inspect
import os
import sys
import types
from pathlib import Path

import pytest

ENVIRONMENT_VARIABLE = "HYPERNET_STUDIO_COMFYUI"
REPO_ROOT = Path(__file__).resolve().parents[2]

SD15_UNET = {  # what ComfyUI's model_detection derives from an SD1.5 checkpoint
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None, "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


def run(result):
    """ComfyUI's loaders and validation are coroutines in current versions, plain calls before."""
    return asyncio.run(result) if inspect.iscoroutine(result) else result


@pytest.fixture(scope="session")
def comfyui() -> types.SimpleNamespace:
    """ComfyUI's modules (nodes, execution, folder_paths, comfy.*), with this pack loaded the way
    ComfyUI loads a custom node. Fails, never skips, when no checkout is named: these tests are
    only ever selected on purpose."""
    checkout = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if not checkout:
        pytest.fail(f"{ENVIRONMENT_VARIABLE} is not set: point it at a ComfyUI checkout (for example "
                    "~/comfy-harness/ComfyUI) and run under a Python that has ComfyUI's requirements",
                    pytrace=False)
    if not (Path(checkout) / "comfy" / "model_management.py").is_file():
        pytest.fail(f"{ENVIRONMENT_VARIABLE}={checkout} is not a ComfyUI checkout (no comfy/model_management.py)",
                    pytrace=False)
    sys.path.insert(0, str(Path(checkout).resolve()))
    import comfy.cli_args

    if not _has_cuda():
        comfy.cli_args.args.cpu = True  # or importing model_management asserts on CUDA
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd
    import execution
    import folder_paths

    import nodes

    if not run(nodes.load_custom_node(str(REPO_ROOT), module_parent="custom_nodes")):
        pytest.fail(f"ComfyUI could not import the pack from {REPO_ROOT}; see the log above", pytrace=False)
    return types.SimpleNamespace(nodes=nodes, execution=execution, folder_paths=folder_paths, comfy=comfy,
                                 model_management=comfy.model_management, checkout=Path(checkout))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def random_weights_patcher(comfyui, model_config, seed: int = 0):
    """A ComfyUI ModelPatcher around `model_config`'s model (a comfy.supported_models class made
    from a UNet config), fp32, every UNet weight drawn at random with unit-variance activations
    (ComfyUI builds its layers uninitialised: no checkpoint file, no download)."""
    import comfy.model_patcher
    import torch

    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.diffusion_model.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else parameter.numel()
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in ** 0.5)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfyui.model_management.get_torch_device(),
                                            offload_device=comfyui.model_management.unet_offload_device())
