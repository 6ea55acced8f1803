"""Stand-ins for the ComfyUI core nodes, end to end on the built-in tiny model."""
import io
import json

import numpy
import pytest
import torch
from PIL import Image

from hypernet_studio.runtime import standins

TINY = "tiny-sd (built-in)"


@pytest.fixture(scope="module")
def checkpoint():
    with torch.inference_mode():
        return standins.CheckpointLoaderSimple().load_checkpoint(TINY)


def _txt2img(checkpoint, seed, width=64, height=48, steps=4, sampler="euler", scheduler="normal", cfg=7.0,
             denoise=1.0, latent=None):
    model, clip, vae = checkpoint
    with torch.inference_mode():
        positive = standins.CLIPTextEncode().encode(clip, "a red fox in the snow")[0]
        negative = standins.CLIPTextEncode().encode(clip, "blurry")[0]
        latent = latent or standins.EmptyLatentImage().generate(width, height, 1)[0]
        sampled = standins.KSampler().sample(model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                             latent, denoise)[0]
        return sampled, standins.VAEDecode().decode(vae, sampled)[0]


def test_txt2img_size_and_seed_determinism(checkpoint):
    _, image = _txt2img(checkpoint, seed=42)
    _, same = _txt2img(checkpoint, seed=42)
    _, other = _txt2img(checkpoint, seed=43)
    assert image.shape == (1, 48, 64, 3) and image.dtype == torch.float32
    assert torch.equal(image, same)
    assert not torch.equal(image, other)


@pytest.mark.parametrize("sampler", standins.SAMPLER_NAMES)
def test_every_sampler_and_scheduler_gives_finite_latents(checkpoint, sampler):
    for scheduler in standins.SCHEDULER_NAMES:
        sampled, _ = _txt2img(checkpoint, seed=1, width=16, height=16, steps=3, sampler=sampler,
                              scheduler=scheduler)
        assert sampled["samples"].shape == (1, 4, 2, 2)
        assert torch.isfinite(sampled["samples"]).all(), (sampler, scheduler)


def test_conditioning_format_and_clip_skip(checkpoint):
    _, clip, _ = checkpoint
    with torch.inference_mode():
        (entry,) = standins.CLIPTextEncode().encode(clip, "a cat")[0]
        skipped = standins.CLIPSetLastLayer().set_last_layer(clip, -2)[0]
        (entry_skipped,) = standins.CLIPTextEncode().encode(skipped, "a cat")[0]
    cond, extras = entry
    assert cond.shape == (1, 77, 48) and extras["pooled_output"].shape == (1, 48)
    assert clip.layer_idx == -1 and skipped.layer_idx == -2  # the input CLIP is not mutated
    assert not torch.allclose(cond, entry_skipped[0])


def test_denoise_below_one_starts_from_the_input_latent(checkpoint):
    generator = torch.Generator().manual_seed(0)
    first = {"samples": torch.randn(1, 4, 6, 8, generator=generator)}
    second = {"samples": torch.randn(1, 4, 6, 8, generator=generator)}
    low_a, _ = _txt2img(checkpoint, seed=5, denoise=0.3, latent=first)
    low_b, _ = _txt2img(checkpoint, seed=5, denoise=0.3, latent=second)
    untouched, _ = _txt2img(checkpoint, seed=5, denoise=0.0, latent=first)
    # A light denoise keeps most of the input: outputs stay near their own inputs.
    assert (low_a["samples"] - first["samples"]).abs().mean() < (low_a["samples"] - second["samples"]).abs().mean()
    assert not torch.allclose(low_a["samples"], low_b["samples"])
    assert torch.equal(untouched["samples"], first["samples"])


def test_ksampler_reports_progress_per_step(checkpoint, monkeypatch):
    updates = []

    class Recorder:
        def update_absolute(self, value, total=None, preview=None):
            updates.append((value, total))

    from hypernet_studio.runtime.headless_host import HEADLESS

    monkeypatch.setattr(HEADLESS, "progress_factory", lambda total, node_id=None: Recorder())
    _txt2img(checkpoint, seed=0, steps=5, sampler="heun")
    assert updates == [(i, 5) for i in range(1, 6)]


def test_vae_encode_crops_to_multiples_of_eight(checkpoint):
    _, _, vae = checkpoint
    with torch.inference_mode():
        latent = standins.VAEEncode().encode(vae, torch.rand(2, 37, 52, 3))[0]
    assert latent["samples"].shape == (2, 4, 4, 6)


def test_save_image_names_chunks_and_refuses_escapes(headless_dirs):
    images = torch.rand(2, 16, 24, 3)
    prompt = {"1": {"class_type": "SaveImage", "inputs": {}}}
    extra = {"workflow": {"nodes": [], "version": 0.4}}
    saver = standins.SaveImage()
    first = saver.save_images(images, "run/pic", prompt=prompt, extra_pnginfo=extra)
    second = saver.save_images(images[:1], "run/pic", prompt=prompt, extra_pnginfo=extra)
    names = [r["filename"] for r in first["ui"]["images"] + second["ui"]["images"]]
    assert names == ["pic_00001_.png", "pic_00002_.png", "pic_00003_.png"]
    assert first["ui"]["images"][0] == {"filename": "pic_00001_.png", "subfolder": "run", "type": "output"}
    path = headless_dirs / "output" / "run" / "pic_00001_.png"
    with Image.open(path) as png:
        assert png.size == (24, 16)
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == extra["workflow"]
        pixels = torch.from_numpy(numpy.asarray(png.convert("RGB")).copy()).float()
    assert torch.equal(pixels, (images[0] * 255).clamp(0, 255).to(torch.uint8).float())
    for bad in ("../escape", "/tmp/abs", "a/../../b"):
        with pytest.raises(ValueError, match="filename_prefix"):
            saver.save_images(images, bad)
    assert not list(headless_dirs.glob("escape*"))
    assert not list((headless_dirs / "output" / "run").glob(".*.tmp"))


def test_preview_image_goes_to_temp(headless_dirs):
    result = standins.PreviewImage().save_images(torch.rand(1, 8, 8, 3))
    (entry,) = result["ui"]["images"]
    assert entry["type"] == "temp" and entry["filename"].startswith("ComfyUI_temp_")
    assert (headless_dirs / "temp" / entry["filename"]).is_file()


def test_load_image_mask_is_one_minus_alpha(headless_dirs):
    rgba = Image.new("RGBA", (10, 6), (255, 0, 0, 64))
    rgba.save(headless_dirs / "input" / "rgba.png")
    Image.new("RGB", (5, 7), (0, 255, 0)).save(headless_dirs / "input" / "rgb.png")
    assert standins.LoadImage.INPUT_TYPES()["required"]["image"][0] == ["rgb.png", "rgba.png"]
    assert standins.LoadImage.INPUT_TYPES()["required"]["image"][1]["image_upload"] is True
    image, mask = standins.LoadImage().load_image("rgba.png")
    assert image.shape == (1, 6, 10, 3) and torch.allclose(image[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert mask.shape == (1, 6, 10) and torch.allclose(mask, torch.full_like(mask, 1 - 64 / 255))
    image, mask = standins.LoadImage().load_image("rgb.png")
    assert image.shape == (1, 7, 5, 3) and mask.shape == (1, 64, 64) and mask.abs().sum() == 0
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.putpixel((1, 1), 1)
    palette.info["transparency"] = 0
    palette.save(headless_dirs / "input" / "palette.png", transparency=0)
    _, mask = standins.LoadImage().load_image("palette.png")
    assert mask.shape == (1, 4, 4) and mask[0, 1, 1] == 0 and mask[0, 0, 0] == 1
    assert standins.LoadImage.VALIDATE_INPUTS("missing.png").startswith("Invalid image file")
    assert standins.LoadImage.VALIDATE_INPUTS("../x.png").startswith("Invalid image file")
    assert standins.LoadImage.IS_CHANGED("rgb.png") != standins.LoadImage.IS_CHANGED("rgba.png")
    left, right = Image.new("RGB", (6, 4), (255, 0, 0)), Image.new("RGB", (6, 4), (0, 0, 255))
    left.save(headless_dirs / "input" / "stereo.mpo", format="MPO", save_all=True, append_images=[right])
    image, mask = standins.LoadImage().load_image("stereo.mpo")
    assert image.shape == (1, 4, 6, 3) and mask.shape == (1, 64, 64) and image[0, 0, 0, 0] > 0.9
    buffer = io.BytesIO()
    noise = numpy.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=numpy.uint8)
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    (headless_dirs / "input" / "cut.jpg").write_bytes(buffer.getvalue()[:-400])  # ComfyUI loads it anyway
    image, _ = standins.LoadImage().load_image("cut.jpg")
    assert image.shape == (1, 48, 64, 3)
    complete = numpy.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=numpy.float32) / 255
    assert torch.allclose(image[0, :8], torch.from_numpy(complete[:8]))  # the rows that survived are decoded
    from PIL import ImageFile
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_input_types_match_comfyui(headless_dirs):
    (headless_dirs / "models" / "checkpoints" / "folder_model").mkdir(parents=True)
    (headless_dirs / "models" / "checkpoints" / "folder_model" / "model_index.json").write_text("{}")
    (headless_dirs / "models" / "checkpoints" / "a.safetensors").write_bytes(b"")
    names = standins.CheckpointLoaderSimple.INPUT_TYPES()["required"]["ckpt_name"][0]
    assert names == [TINY, "tiny-sdxl (built-in)", "a.safetensors", "folder_model"]
    ksampler = standins.KSampler.INPUT_TYPES()["required"]
    assert list(ksampler) == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                              "negative", "latent_image", "denoise"]
    assert ksampler["seed"][1]["control_after_generate"] is True
    assert (ksampler["steps"][1]["default"], ksampler["cfg"][1]["default"], ksampler["denoise"][1]["default"]) \
        == (20, 8.0, 1.0)
    for name in ("euler", "euler_ancestral", "heun", "dpmpp_2m", "ddim", "lms"):
        assert name in ksampler["sampler_name"][0]
    for name in ("normal", "karras", "simple"):
        assert name in ksampler["scheduler"][0]
    latent = standins.EmptyLatentImage.INPUT_TYPES()["required"]
    assert {k: latent["width"][1][k] for k in ("default", "min", "step")} == {"default": 512, "min": 16, "step": 8}
    last_layer = standins.CLIPSetLastLayer.INPUT_TYPES()["required"]["stop_at_clip_layer"][1]
    assert (last_layer["default"], last_layer["min"], last_layer["max"]) == (-1, -24, -1)
    save = standins.SaveImage.INPUT_TYPES()
    assert save["required"]["filename_prefix"][1]["default"] == "ComfyUI"
    assert save["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert standins.CheckpointLoaderSimple.RETURN_TYPES == ("MODEL", "CLIP", "VAE")
    assert standins.LoadImage.RETURN_TYPES == ("IMAGE", "MASK")
    assert standins.SaveImage.OUTPUT_NODE and standins.PreviewImage.OUTPUT_NODE


def test_txt2img_workflow_runs_headless_end_to_end(headless_dirs):
    from pathlib import Path

    from hypernet_studio.runtime.api import run_workflow_file

    workflow = Path(__file__).resolve().parents[2] / "workflows" / "txt2img.json"
    pixels = []
    for seed in (7, 7, 8):
        result = run_workflow_file(workflow, {"3.seed": seed, "3.steps": 2}, base_dir=headless_dirs)
        (png,) = [p for p in result.files if p.suffix == ".png"]
        with Image.open(png) as image:
            assert image.size == (64, 64)
            assert json.loads(image.text["prompt"])["3"]["inputs"]["seed"] == seed
            assert json.loads(image.text["workflow"])["version"] == 0.4
            pixels.append(numpy.asarray(image.convert("RGB")).copy())
    assert (pixels[0] == pixels[1]).all() and (pixels[0] != pixels[2]).any()


def test_ksampler_stops_at_the_next_step_when_interrupted(checkpoint, monkeypatch):
    from hypernet_studio.runtime import headless_host
    from hypernet_studio.runtime.headless_host import HEADLESS

    calls = []
    model = checkpoint[0]
    original = type(model).apply_model

    def counting(self, *args):
        calls.append(1)
        HEADLESS.interrupt.set()  # the user presses Ctrl-C during the first step
        return original(self, *args)

    monkeypatch.setattr(type(model), "apply_model", counting)
    monkeypatch.setattr(HEADLESS, "progress_factory", None)
    try:
        with pytest.raises(headless_host.InterruptedByUser):
            _txt2img(checkpoint, seed=0, steps=6)
    finally:
        HEADLESS.interrupt.clear()
    assert len(calls) == 1
