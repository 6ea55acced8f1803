"""diffusers configs read off the tensor shapes of the LDM files ldm_files.py writes."""
import pytest

from hypernet_studio.hypernet.sd.components import CheckpointError
from hypernet_studio.hypernet.sd.ldm_configs import group_count, unet_config_from_ldm, vae_config_from_ldm

from .ldm_files import MULT, TEXT_H, VAE_CH, VAE_MULT, C, sd1_state_dict, sd2_state_dict


def test_sd1_and_sd2_unet_configs_follow_the_shapes():
    sd1 = unet_config_from_ldm(sd1_state_dict(), "sd1")
    assert sd1["block_out_channels"] == tuple(C * m for m in MULT) == (32, 64, 64)
    # Attention at the first two levels only (ldm_files.ATTN_LEVELS), mirrored on the way up.
    assert sd1["down_block_types"] == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    assert sd1["up_block_types"] == ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    assert (sd1["layers_per_block"], sd1["cross_attention_dim"], sd1["transformer_layers_per_block"]) == (1, TEXT_H, 1)
    assert (sd1["attention_head_dim"], sd1["use_linear_projection"], sd1["upcast_attention"]) == (8, False, False)
    sd2 = unet_config_from_ldm(sd2_state_dict(), "sd2")
    # SD2: 64-channel heads, linear projections, upcast attention, 768-px sample size.
    assert (sd2["attention_head_dim"], sd2["use_linear_projection"], sd2["upcast_attention"]) == ([1, 1, 1], True, True)
    assert (sd1["sample_size"], sd2["sample_size"]) == (64, 96)


def test_vae_config_follows_the_shapes_and_a_missing_vae_is_named():
    config = vae_config_from_ldm(sd1_state_dict())
    assert config["block_out_channels"] == tuple(VAE_CH * m for m in VAE_MULT) == (16, 32, 32, 32)
    assert (config["layers_per_block"], config["latent_channels"], config["norm_num_groups"]) == (1, 4, 16)
    assert config["scaling_factor"] == 0.18215
    with pytest.raises(CheckpointError, match="no VAE found"):
        vae_config_from_ldm({})


def test_group_norm_groups_are_32_or_the_largest_power_of_two_dividing_every_width():
    assert (group_count([320, 640, 1280]), group_count([48, 80]), group_count([12]), group_count([7])) == (32, 16, 4, 1)
