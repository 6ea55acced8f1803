"""What a checkpoint is: its family from its keys (others refused, saying what they are) and
its prediction type."""
import pytest
import torch

from hypernet_studio.hypernet.sd.components import CheckpointError
from hypernet_studio.hypernet.sd.ldm_layout import V_PREDICTION_PROBE
from hypernet_studio.hypernet.sd.loading import load_components
from hypernet_studio.hypernet.sd.model_family import detect_family, detect_prediction_type

from .sgm_files import CLIP_G, SMALL, UNET, save_sgm_file


def _keys(*names):
    return {name: torch.zeros(1) for name in names}


def test_family_detection_on_synthetic_key_sets():
    unet_key = "model.diffusion_model.input_blocks.0.0.weight"
    sd1_text_key = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    assert detect_family(_keys(unet_key, sd1_text_key)) \
        == "sd1"
    assert detect_family(_keys(unet_key, "cond_stage_model.model.transformer.resblocks.0.ln_1.weight")) \
        == "sd2"
    context_1024 = {unet_key: torch.zeros(1),
                    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight":
                        torch.zeros(320, 1024)}
    assert detect_family(context_1024) == "sd2"
    with pytest.raises(CheckpointError, match="SDXL"):
        detect_family(_keys(unet_key, "conditioner.embedders.1.model.ln_final.weight"), "xl.safetensors")
    with pytest.raises(CheckpointError, match="LoRA"):
        detect_family(_keys("lora_unet_down_blocks_0.lora_up.weight"), "lora.safetensors")
    with pytest.raises(CheckpointError, match="standalone VAE"):
        detect_family(_keys("encoder.conv_in.weight", "decoder.conv_out.weight"))
    with pytest.raises(CheckpointError, match="no known text encoder"):
        detect_family(_keys(unet_key))


def test_prediction_type_rules(tmp_path):
    probe = V_PREDICTION_PROBE
    generator = torch.Generator().manual_seed(0)
    trained = {probe: torch.randn(640, generator=generator) * 0.2}
    fresh = {probe: torch.randn(640, generator=generator) * 0.01}
    assert detect_prediction_type(trained, "sd2") == "v_prediction"
    assert detect_prediction_type(fresh, "sd2") == "epsilon"
    assert detect_prediction_type(trained, "sd1") == "epsilon"  # the heuristic is for SD2 only
    assert detect_prediction_type(trained, "sd2", model_type="epsilon") == "epsilon"
    assert detect_prediction_type({"v_pred": torch.zeros(())}, "sd1") == "v_prediction"
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert detect_prediction_type(fresh, "sd2", checkpoint) == "v_prediction"
    with pytest.raises(CheckpointError, match="model_type"):
        detect_prediction_type(fresh, "sd2", model_type="flow")


def test_refiner_inpainting_and_edm_files_are_refused_saying_what_they_are(tmp_path):
    small_vocab = dict(SMALL, vocab=512)
    refiner = save_sgm_file(tmp_path, "refiner.safetensors", dict(small_vocab, refiner=True, size_values=5))
    with pytest.raises(CheckpointError, match=r"refiner\.safetensors: this is an SDXL refiner .*only SDXL base"):
        load_components(refiner)
    inpainting = save_sgm_file(tmp_path, "inpaint.safetensors", dict(small_vocab, in_ch=9))
    with pytest.raises(CheckpointError, match=r"SDXL inpainting model \(the UNet takes 9 input channels\)"):
        load_components(inpainting)
    pix2pix = save_sgm_file(tmp_path, "ip2p.safetensors", dict(small_vocab, in_ch=8))
    with pytest.raises(CheckpointError, match="instruct-pix2pix"):
        load_components(pix2pix)
    playground = save_sgm_file(tmp_path, "pg.safetensors", small_vocab,
                       lambda s: s.update(edm_mean=torch.zeros(1, 4, 1, 1), edm_std=torch.ones(1, 4, 1, 1)))
    with pytest.raises(CheckpointError, match="Playground"):
        load_components(playground)
    no_clip_l = {k: torch.zeros(2, 2) for k in (UNET + "input_blocks.0.0.weight", CLIP_G + "ln_final.weight")}
    with pytest.raises(CheckpointError, match="without 'conditioner.embedders.0.transformer.*'"):
        detect_family(no_clip_l, "partial.safetensors")
