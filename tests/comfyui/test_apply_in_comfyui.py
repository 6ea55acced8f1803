"""Apply Hypernet inside a real ComfyUI against ComfyUI's own hypernetwork loader
(comfy_extras/nodes_hypernetwork.py, the HypernetworkLoader node) on the same A1111 .pt file,
written by this pack: the latent that ComfyUI's sampler draws with the same seed must be the same.

The models are ComfyUI's own SD1 and SDXL classes (openaimodel.UNetModel in model_base.SD15 /
SDXL) with random weights built here: fewer blocks than the real ones, but the real attention
widths, so every module of the file is used (SD1: 320/640/1280 and the 768 text context; SDXL:
640/1280, the 2048 context, and the `y` vector built from the pooled text)."""
import pytest
import torch

from hypernet_studio.hypernet.file_format import save_hypernetwork
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.spec import FAMILY_SIZES, HypernetSpec

from .conftest import SD15_UNET, random_weights_patcher

pytestmark = pytest.mark.comfyui

# One ResBlock per level and one transformer layer per attention block (the real SD1.5 has 2 per
# level and a fourth level without attention; SDXL has 2 and 2/10 layers). The output blocks pop
# transformer_depth_output from the end, deepest level first.
SMALL_SD1_UNET = {**SD15_UNET, "num_res_blocks": [1, 1, 1], "channel_mult": [1, 2, 4],
                  "transformer_depth": [1, 1, 1], "transformer_depth_output": [1, 1, 1, 1, 1, 1]}
SMALL_SDXL_UNET = {**SD15_UNET, "num_res_blocks": [1, 1, 1], "channel_mult": [1, 2, 4],
                   "transformer_depth": [0, 1, 1], "transformer_depth_output": [0, 0, 1, 1, 1, 1],
                   "use_linear_in_transformer": True, "context_dim": 2048, "num_heads": -1,
                   "num_head_channels": 64, "adm_in_channels": 2816, "num_classes": "sequential"}
SAMPLING = {"steps": 1, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "seed": 123}


def _family(comfyui, family):
    """(patcher, positive, negative, latent) for SD1 or SDXL: two different random prompts."""
    import comfy.supported_models

    if family == "SD1":
        config, context_width = comfy.supported_models.SD15(dict(SMALL_SD1_UNET)), 768
    else:
        config, context_width = comfy.supported_models.SDXL(dict(SMALL_SDXL_UNET)), 2048
    patcher = random_weights_patcher(comfyui, config)
    generator = torch.Generator().manual_seed(1)

    def conditioning():
        extra = {"pooled_output": torch.randn(1, 1280, generator=generator)} if family == "SDXL" else {}
        return [[torch.randn(1, 77, context_width, generator=generator), extra]]

    return patcher, conditioning(), conditioning(), {"samples": torch.zeros(1, 4, 16, 16)}


@pytest.fixture(scope="module", params=["SD1", "SDXL"])
def family(request, comfyui):
    return request.param, _family(comfyui, request.param)


@pytest.fixture(scope="module")
def hypernetwork_file(comfyui, family, tmp_path_factory):
    """An A1111 .pt for the family's widths, written by our writer; relu, 1-2-1, no layer norm
    (a structure ComfyUI's loader supports), Xavier weights so that it changes the result a lot."""
    name, _ = family
    folder = tmp_path_factory.mktemp(f"hypernetworks_{name}")
    spec = HypernetSpec(layer_structure=[1, 2, 1], activation="relu", weight_init="XavierNormal",
                        sizes=list(FAMILY_SIZES[name]))
    save_hypernetwork(Hypernetwork.build(spec, seed=5, name=f"hn_{name}"), folder / f"hn_{name}.pt", format="pt")
    comfyui.folder_paths.add_model_folder_path("hypernetworks", str(folder))
    return f"hn_{name}.pt"


@pytest.fixture(scope="module")
def plain(comfyui, family):
    """The latent the family's model samples without any hypernetwork."""
    return _sample(comfyui, family[1][0], family[1])


def _sample(comfyui, model, family_inputs):
    _, positive, negative, latent = family_inputs
    (out,) = comfyui.nodes.common_ksampler(model, positive=positive, negative=negative, latent=latent, **SAMPLING)
    return out["samples"]


def _ours(comfyui, patcher, file_name, strength):
    load = comfyui.nodes.NODE_CLASS_MAPPINGS["HN_LoadHypernet"]()
    apply = comfyui.nodes.NODE_CLASS_MAPPINGS["HN_ApplyHypernet"]()
    (hypernetwork,) = load.load(file_name)
    (model,) = apply.apply(patcher, hypernetwork, strength)
    return model


def _builtin(patcher, file_name, strength):
    from comfy_extras.nodes_hypernetwork import HypernetworkLoader

    (model,) = HypernetworkLoader.execute(patcher, file_name, strength).result
    assert model.model_options["transformer_options"]["patches"]["attn2_patch"], "the built-in loader refused it"
    return model


def test_apply_samples_the_same_latent_as_comfyuis_own_loader(comfyui, family, hypernetwork_file, plain):
    name, family_inputs = family
    patcher = family_inputs[0]
    strength = 0.75  # not 1: a strength applied in the wrong place or not at all shows
    ours = _sample(comfyui, _ours(comfyui, patcher, hypernetwork_file, strength), family_inputs)
    builtin = _sample(comfyui, _builtin(patcher, hypernetwork_file, strength), family_inputs)
    # Both run fp32 Linear layers on the same inputs; they may differ only in fp32 rounding (our
    # self-attention pair runs k and v in one matmul). fp32 carries 2**-23 ~ 1.2e-7 relative; the
    # random UNet amplifies it, so the bound is 1e-5 of the latent's largest value, which is
    # still far below the hypernetwork's own effect (checked, so that equality means something). On
    # the harness's CPU the two latents come out bit-identical.
    scale = builtin.abs().max()
    tolerance = 1e-5 * scale
    difference = (ours - builtin).abs().max()
    effect = (builtin - plain).abs().max()
    print(f"\n{name}, strength {strength}: latent max |x| {scale:.3g}, hypernetwork effect {effect:.3g}, "
          f"ours - ComfyUI's loader {difference:.3g} (tolerance {tolerance:.3g})")
    assert effect > 100 * tolerance
    assert difference <= tolerance


def test_strength_zero_samples_the_same_latent_as_no_hypernetwork(comfyui, family, hypernetwork_file, plain):
    _, family_inputs = family
    patcher = family_inputs[0]
    assert torch.equal(_sample(comfyui, _ours(comfyui, patcher, hypernetwork_file, 0.0), family_inputs), plain)
    assert torch.equal(_sample(comfyui, _builtin(patcher, hypernetwork_file, 0.0), family_inputs), plain)
