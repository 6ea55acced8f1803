"""SDXL base single files in the original SGM key layout (see sgm_files.py), and diffusers
SDXL folders: every tensor lands where it belongs, unusual depth patterns load or are refused."""
import pytest
import torch

from hypernet_studio.hypernet.sd import sdxl_checkpoint
from hypernet_studio.hypernet.sd.components import CheckpointError
from hypernet_studio.hypernet.sd.loading import load_components
from hypernet_studio.hypernet.sd.model_family import detect_family

from .sgm_files import CLIP_G, CLIP_L, FULL, SMALL, UNET, VAE, random_state, sgm_shapes


def test_full_size_layout_is_sdxl_base_and_gives_its_diffusers_config():
    shapes = sgm_shapes(FULL)
    counts = {prefix: sum(k.startswith(prefix) for k in shapes) for prefix in (UNET, VAE, CLIP_L, CLIP_G)}
    assert len(shapes) == 2515 and counts == {UNET: 1680, VAE: 248, CLIP_L: 197, CLIP_G: 390}
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    assert detect_family(meta) == "sdxl"
    config, middle_depth = sdxl_checkpoint.sdxl_unet_config_from_ldm(meta)
    assert middle_depth == 10
    expected = {  # SDXL base's diffusers UNet config (stabilityai/stable-diffusion-xl-base-1.0, unet/config.json)
        "block_out_channels": (320, 640, 1280), "layers_per_block": 2, "in_channels": 4, "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
        "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32, "sample_size": 128,
    }
    assert config == expected
    unet = sdxl_checkpoint.build_sdxl_unet(config, middle_depth)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684  # sd_xl_base_1.0's UNet


def test_every_tensor_of_the_file_lands_in_a_model(sdxl_file, sdxl_components):
    _, state = sdxl_file
    components = sdxl_components
    assert (components.family, components.prediction_type, components.default_clip_layer) == ("sdxl", "epsilon", -2)
    assert components.is_sdxl and components.context_dim == SMALL["l_dim"] + SMALL["g_dim"]
    assert components.latent_scale_factor == 0.13025 and components.vae.config.scaling_factor == 0.13025
    modules = [getattr(components, name) for name in components.module_names()]
    assert len(modules) == 4 and all(p.dtype == torch.float32 and not p.requires_grad
                                     for m in modules for p in m.parameters())
    # The load is strict (no missing or unexpected key), so equal totals mean nothing was left behind:
    # only CLIP-L's position ids (a fixed buffer) and OpenCLIP's logit_scale are unused by design.
    loaded = sum(t.numel() for m in modules for t in m.state_dict().values())
    unused = state[CLIP_L + "embeddings.position_ids"].numel() + state[CLIP_G + "logit_scale"].numel()
    assert loaded == sum(t.numel() for t in state.values()) - unused
    unet, te_l, te_g = components.unet, components.text_encoder, components.text_encoder_2
    same = torch.testing.assert_close
    same(unet.add_embedding.linear_1.weight, state[UNET + "label_emb.0.0.weight"])
    same(unet.add_embedding.linear_2.bias, state[UNET + "label_emb.0.2.bias"])
    same(unet.down_blocks[2].attentions[1].transformer_blocks[1].attn2.to_k.weight,
         state[UNET + "input_blocks.8.1.transformer_blocks.1.attn2.to_k.weight"])
    same(unet.mid_block.attentions[0].transformer_blocks[1].ff.net[2].weight,
         state[UNET + "middle_block.1.transformer_blocks.1.ff.net.2.weight"])
    same(unet.up_blocks[1].upsamplers[0].conv.weight, state[UNET + "output_blocks.5.2.conv.weight"])
    same(components.vae.decoder.mid_block.attentions[0].to_v.weight,
         state[VAE + "decoder.mid.attn_1.v.weight"][:, :, 0, 0])
    same(te_l.state_dict()[next(k for k in te_l.state_dict() if k.endswith("encoder.layers.2.mlp.fc1.weight"))],
         state[CLIP_L + "encoder.layers.2.mlp.fc1.weight"])
    g_state, width = te_g.state_dict(), SMALL["g_dim"]
    same(g_state[next(k for k in g_state if k.endswith("encoder.layers.1.self_attn.v_proj.weight"))],
         state[CLIP_G + "transformer.resblocks.1.attn.in_proj_weight"][2 * width:])
    same(te_g.text_projection.weight, state[CLIP_G + "text_projection"].T)  # open_clip computes x @ P
    assert (te_l.config.hidden_act, te_g.config.hidden_act) == ("quick_gelu", "gelu")


def _unet_only(config):
    return {k: v for k, v in random_state(sgm_shapes(config)).items() if not k.startswith("conditioner.")}


def test_asymmetric_depths_load_key_for_key_and_run():
    """Like a pruned SDXL: deep input side, one-block middle and output sides (the middle block is
    rebuilt, since diffusers' config ties its depth to the last level's)."""
    config = dict(SMALL, depth=(0, 2, 3), depth_mid=1, depth_out=(0, 1, 1))
    state = _unet_only(config)
    unet, _ = sdxl_checkpoint._load_unet_and_vae(state)
    assert len(unet.mid_block.attentions[0].transformer_blocks) == 1
    assert [len(a.transformer_blocks) for a in unet.down_blocks[2].attentions] == [3, 3]
    assert [len(a.transformer_blocks) for a in unet.up_blocks[0].attentions] == [1, 1, 1]
    torch.testing.assert_close(unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q.weight,
                               state[UNET + "middle_block.1.transformer_blocks.0.attn1.to_q.weight"])
    unet.eval()
    with torch.no_grad():
        out = unet(torch.randn(1, 4, 8, 8), torch.tensor([10.0]), encoder_hidden_states=torch.randn(1, 77, 160),
                   added_cond_kwargs={"text_embeds": torch.randn(1, SMALL["g_proj"]),
                                      "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}).sample
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_distilled_depth_patterns_load_and_unexpressible_ones_are_refused():
    vega_like = dict(SMALL, depth=(0, 1, 2), depth_mid=1, depth_out=(0, (1, 1, 1), (2, 2, 1)))
    unet, _ = sdxl_checkpoint._load_unet_and_vae(_unet_only(vega_like))
    assert [len(a.transformer_blocks) for a in unet.up_blocks[0].attentions] == [2, 2, 1]
    mixed = dict(SMALL, depth_out=(0, (1, 1, 0), 2))
    with pytest.raises(CheckpointError, match=r"output level 1 mixes blocks with and without attention"):
        sdxl_checkpoint._load_unet_and_vae(_unet_only(mixed))


def test_a_key_a_helper_would_drop_is_an_error(sdxl_file):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    _, state = sdxl_file
    extra = dict(state)
    extra[UNET + "pos_embed.weight"] = torch.zeros(3)  # a top-level key diffusers' UNet helper has no name for
    with pytest.raises(CheckpointError, match="UNet: the conversion kept"):
        sdxl_checkpoint._load_unet_and_vae(extra)
    # The helper's silent trap: without addition_embed_type="text_time" it skips label_emb.
    config, _ = sdxl_checkpoint.sdxl_unet_config_from_ldm(state)
    config.pop("addition_embed_type")
    unet_state = {k: v for k, v in state.items() if k.startswith(UNET)}
    with pytest.raises(CheckpointError, match="UNet: the conversion kept"):
        sdxl_checkpoint._check_all_converted(unet_state, convert_ldm_unet_checkpoint(unet_state, config), "UNet")


def test_diffusers_sdxl_folder_round_trip(tmp_path, sdxl_components):
    import json

    components = sdxl_components
    folder = tmp_path / "xl-pipeline"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        getattr(components, name).save_pretrained(str(folder / name))
    components.tokenizer.save_pretrained(str(folder / "tokenizer"))
    (folder / "model_index.json").write_text("{}")
    loaded = load_components(folder)
    assert (loaded.family, loaded.prediction_type, loaded.latent_scale_factor) == ("sdxl", "epsilon", 0.13025)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(components, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (loaded.tokenizer.pad_token_id, loaded.tokenizer_2.pad_token_id) == (49407, 0)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["projection_class_embeddings_input_dim"] = SMALL["g_proj"] + 5 * 256
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="refiner"):
        load_components(folder)
