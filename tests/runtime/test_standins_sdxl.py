"""The stand-ins with an SDXL checkpoint: CLIPTextEncodeSDXL as ComfyUI declares it, and
txt2img on the built-in tiny SDXL model with pooled output and size values reaching the UNet."""
import pytest
import torch

from hypernet_studio.hypernet.sd.components import TextConditioning
from hypernet_studio.hypernet.sd.sampling import sample
from hypernet_studio.hypernet.sd.sdxl import size_time_ids
from hypernet_studio.runtime import standins

TINY_SDXL = "tiny-sdxl (built-in)"


@pytest.fixture(scope="module")
def checkpoint():
    with torch.inference_mode():
        return standins.CheckpointLoaderSimple().load_checkpoint(TINY_SDXL)


def test_clip_text_encode_sdxl_declares_comfyuis_interface():
    declared = standins.CLIPTextEncodeSDXL.INPUT_TYPES()
    assert list(declared) == ["required"]
    inputs = declared["required"]
    assert list(inputs) == ["clip", "width", "height", "crop_w", "crop_h", "target_width", "target_height",
                            "text_g", "text_l"]
    assert inputs["clip"] == ("CLIP",)
    for name, default in (("width", 1024), ("height", 1024), ("crop_w", 0), ("crop_h", 0), ("target_width", 1024),
                          ("target_height", 1024)):
        assert inputs[name] == ("INT", {"default": default, "min": 0, "max": 16384}), name
    for name in ("text_g", "text_l"):
        assert inputs[name] == ("STRING", {"multiline": True, "dynamicPrompts": True})
    cls = standins.CLIPTextEncodeSDXL
    assert (cls.RETURN_TYPES, cls.CATEGORY, getattr(cls, "OUTPUT_NODE", False)) == \
        (("CONDITIONING",), "advanced/conditioning", False)
    assert standins.NODE_CLASS_MAPPINGS["CLIPTextEncodeSDXL"] is cls
    assert "CLIPTextEncodeSDXL" not in standins.NODE_DISPLAY_NAME_MAPPINGS  # ComfyUI shows its ID
    assert standins.CheckpointLoaderSimple.VALIDATE_INPUTS(TINY_SDXL) is True


def test_conditioning_entries_carry_pooled_output_and_sizes(checkpoint):
    _, clip, _ = checkpoint
    with torch.inference_mode():
        ((cond, extras),) = standins.CLIPTextEncodeSDXL().execute(clip, 896, 1152, 16, 32, 1024, 1024,
                                                                  "a lighthouse", "a " * 80)[0]
        ((plain, plain_extras),) = standins.CLIPTextEncode().encode(clip, "a lighthouse")[0]
        ((empty, _),) = standins.CLIPTextEncode().encode(clip, "")[0]
    # text_l needs two chunks ("a" is one token), so text_g gets an empty-prompt chunk: 154 tokens each.
    assert cond.shape == (1, 154, 2048) and plain.shape == (1, 77, 2048)
    assert {k: v for k, v in extras.items() if k != "pooled_output"} == {
        "width": 896, "height": 1152, "crop_w": 16, "crop_h": 32, "target_width": 1024, "target_height": 1024}
    assert list(plain_extras) == ["pooled_output"]
    torch.testing.assert_close(extras["pooled_output"], plain_extras["pooled_output"])  # text_g's chunk 0
    torch.testing.assert_close(cond[:, :77, 768:], plain[:, :, 768:])  # OpenCLIP-G's part encodes text_g
    torch.testing.assert_close(cond[:, 77:, 768:], empty[:, :, 768:])  # ...then the empty prompt


def test_sdxl_txt2img_through_the_standins(checkpoint):
    model, clip, vae = checkpoint
    with torch.inference_mode():
        positive = standins.CLIPTextEncodeSDXL().execute(clip, 1024, 768, 0, 64, 1024, 1024, "a fox", "a fox")[0]
        negative = standins.CLIPTextEncode().encode(clip, "blurry")[0]
        latent = standins.EmptyLatentImage().generate(32, 48, 1)[0]
        sampled = standins.KSampler().sample(model, 7, 2, 6.0, "euler", "normal", positive, negative, latent, 1.0)[0]
        image = standins.VAEDecode().decode(vae, sampled)[0]
        # The same through the library with the values ComfyUI's KSampler uses: the positive entry's
        # own sizes (height 768, width 1024, crop top 64, left 0), the negative's from the latent.
        expected = sample(model, latent["samples"],
                          TextConditioning(positive[0][0], positive[0][1]["pooled_output"],
                                           size_time_ids(1024, 768, 0, 64, 1024, 1024)),
                          TextConditioning(negative[0][0], negative[0][1]["pooled_output"], size_time_ids(32, 48)),
                          seed=7, steps=2, cfg=6.0, sampler_name="euler", scheduler="normal")
    assert torch.equal(sampled["samples"], expected)
    assert image.shape == (1, 48, 32, 3) and torch.isfinite(image).all()
    assert model.latent_scale_factor == 0.13025 and vae.vae.config.scaling_factor == 0.13025


def test_sdxl_inputs_are_checked(checkpoint):
    model, clip, _ = checkpoint
    with torch.inference_mode():
        sd1_clip = standins.CheckpointLoaderSimple().load_checkpoint("tiny-sd (built-in)")[1]
        with pytest.raises(ValueError, match="not an SDXL checkpoint's CLIP"):
            standins.CLIPTextEncodeSDXL().execute(sd1_clip, 1024, 1024, 0, 0, 1024, 1024, "a", "a")
        cond = standins.CLIPTextEncode().encode(clip, "a fox")[0]
        bare = [[cond[0][0], {}]]
        latent = standins.EmptyLatentImage().generate(32, 32, 1)[0]
        with pytest.raises(ValueError, match="input 'negative' has no pooled_output"):
            standins.KSampler().sample(model, 0, 1, 5.0, "euler", "normal", cond, bare, latent, 1.0)
        sd1_cond = standins.CLIPTextEncode().encode(sd1_clip, "a fox")[0]
        with pytest.raises(ValueError, match="pooled text embedding is 48 wide"):
            standins.KSampler().sample(model, 0, 1, 5.0, "euler", "normal", cond, sd1_cond, latent, 1.0)


def test_the_shipped_txt2img_workflow_runs_on_tiny_sdxl(headless_dirs):
    from pathlib import Path

    from PIL import Image

    from hypernet_studio.runtime.api import run_workflow_file

    workflow = Path(__file__).resolve().parents[2] / "workflows" / "txt2img.json"
    result = run_workflow_file(workflow, {"4.ckpt_name": TINY_SDXL, "3.steps": 1, "5.width": 32, "5.height": 32},
                               base_dir=headless_dirs)
    (png,) = [p for p in result.files if p.suffix == ".png"]
    with Image.open(png) as image:
        assert image.size == (32, 32)
