"""Offline loading of SD1/SD2 checkpoints the test writes itself in the original LDM key layout
(see ldm_files.py), as single files and as diffusers folders."""
import json

import torch

from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.headless_clip import HeadlessCLIP
from hypernet_studio.hypernet.sd.loading import load_components
from hypernet_studio.hypernet.sd.sampling import sample

from .ldm_files import (
    TEXT_H,
    TEXT_LAYERS,
    Writer,
    sd2_state_dict,
    write_clip_text,
    write_ldm_unet,
    write_ldm_vae,
    write_tokenizer_files,
)


def test_sd1_single_file_loads_with_the_original_weights(sd1_file):
    path, state = sd1_file
    assert path.stat().st_size < 20 * 2**20
    components = load_components(path)
    assert (components.family, components.prediction_type, components.context_dim) == ("sd1", "epsilon", TEXT_H)
    unet, vae, text = components.unet, components.vae, components.text_encoder
    ldm = "model.diffusion_model."
    torch.testing.assert_close(unet.conv_in.weight, state[ldm + "input_blocks.0.0.weight"])
    torch.testing.assert_close(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight,
                               state[ldm + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"])
    torch.testing.assert_close(unet.up_blocks[2].resnets[1].conv1.weight,
                               state[ldm + "output_blocks.5.0.in_layers.2.weight"])
    torch.testing.assert_close(vae.encoder.conv_in.weight, state["first_stage_model.encoder.conv_in.weight"])
    torch.testing.assert_close(vae.decoder.mid_block.attentions[0].to_q.weight,
                               state["first_stage_model.decoder.mid.attn_1.q.weight"][:, :, 0, 0])
    text_state = text.state_dict()
    key = next(k for k in text_state if k.endswith("encoder.layers.1.mlp.fc2.weight"))
    torch.testing.assert_close(text_state[key],
                               state["cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight"])
    assert text.config.hidden_act == "quick_gelu"
    assert not any(p.requires_grad for p in unet.parameters())

    model, clip, vae_object = headless_objects(components)
    assert model.attention_widths() == [32, 64]
    with torch.inference_mode():
        positive = clip.encode_from_tokens(clip.tokenize("a cat"))
        negative = clip.encode_from_tokens(clip.tokenize(""))
        latent = sample(model, torch.zeros(1, 4, 4, 4), positive, negative, seed=0, steps=2, cfg=5.0,
                        sampler_name="euler", scheduler="normal")
        image = vae_object.decode(latent)
    assert image.shape == (1, 32, 32, 3) and torch.isfinite(image).all()


def test_a_checkpoint_with_clips_vocabulary_needs_no_tokenizer_files(tmp_path):
    """A user's SD1 file in an otherwise empty models folder: the bundled CLIP vocabulary is used."""
    from safetensors.torch import save_file

    w = Writer(2)
    write_ldm_unet(w, context=TEXT_H)
    write_ldm_vae(w)
    write_clip_text(w, vocab=49408)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "tokenizers").mkdir()
    save_file(w.sd, str(tmp_path / "checkpoints" / "mine.safetensors"))
    components = load_components(tmp_path / "checkpoints" / "mine.safetensors",
                                 tokenizer_dirs=[tmp_path / "tokenizers"])
    _, clip, _ = headless_objects(components)
    tokens = clip.tokenize("a photo of a cat")
    assert tokens["input_ids"][0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    with torch.inference_mode():
        assert clip.encode_from_tokens(tokens).shape == (1, 77, TEXT_H)


def test_sd2_layout_open_clip_is_converted(tmp_path):
    from safetensors.torch import save_file

    state = sd2_state_dict()
    save_file(state, str(tmp_path / "tiny21.safetensors"))
    tokenizers = tmp_path / "models" / "tokenizers" / "sd2"
    tokenizers.mkdir(parents=True)
    write_tokenizer_files(tokenizers)
    components = load_components(tmp_path / "tiny21.safetensors", model_type="v",
                                 tokenizer_dirs=[tmp_path / "models" / "tokenizers"])
    assert (components.family, components.prediction_type, components.default_clip_layer) == \
        ("sd2", "v_prediction", -2)
    assert components.unet.config.use_linear_projection
    assert components.tokenizer.pad_token == "!"
    text_state = components.text_encoder.state_dict()
    q_key = next(k for k in text_state if k.endswith("encoder.layers.0.self_attn.k_proj.weight"))
    in_proj = state["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]
    torch.testing.assert_close(text_state[q_key], in_proj[TEXT_H:2 * TEXT_H])
    assert components.text_encoder.config.hidden_act == "gelu"


def test_diffusers_folder_round_trip(tmp_path, sd1_file):
    path, _ = sd1_file
    components = load_components(path)
    folder = tmp_path / "pipeline"
    components.unet.save_pretrained(str(folder / "unet"))
    components.vae.save_pretrained(str(folder / "vae"))
    components.text_encoder.save_pretrained(str(folder / "text_encoder"))
    components.tokenizer.save_pretrained(str(folder / "tokenizer"))
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000,
         "prediction_type": "epsilon"}))
    (folder / "model_index.json").write_text("{}")
    loaded = load_components(folder)
    assert (loaded.family, loaded.prediction_type) == ("sd1", "epsilon")
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(components, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.tokenizer("a cat")["input_ids"] == components.tokenizer("a cat")["input_ids"]


def _open_clip_reference(state, input_ids, layer_count, prefix="cond_stage_model.model."):
    """OpenCLIP's text tower written out from its definition: token + positional embedding,
    pre-LN residual blocks (causal multi-head attention with a packed in_proj, GELU MLP),
    hidden states after each block, final LayerNorm."""
    import torch.nn.functional as F

    get = lambda name: state[prefix + name]
    x = get("token_embedding.weight")[input_ids] + get("positional_embedding")[: input_ids.shape[1]]
    tokens, heads = x.shape[1], max(TEXT_H // 64, 1)
    causal = torch.full((tokens, tokens), float("-inf")).triu(1)
    for i in range(layer_count):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (TEXT_H,), get(p + "ln_1.weight"), get(p + "ln_1.bias"))
        q, k, v = (h @ get(p + "attn.in_proj_weight").T + get(p + "attn.in_proj_bias")).chunk(3, dim=-1)
        split = lambda t: t.view(t.shape[0], tokens, heads, -1).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5) + causal, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(x.shape)
        x = x + attended @ get(p + "attn.out_proj.weight").T + get(p + "attn.out_proj.bias")
        h = F.layer_norm(x, (TEXT_H,), get(p + "ln_2.weight"), get(p + "ln_2.bias"))
        h = F.gelu(h @ get(p + "mlp.c_fc.weight").T + get(p + "mlp.c_fc.bias"))
        x = x + h @ get(p + "mlp.c_proj.weight").T + get(p + "mlp.c_proj.bias")
    return F.layer_norm(x, (TEXT_H,), get("ln_final.weight"), get("ln_final.bias"))


def test_sd2_text_encoder_matches_open_clip_math(tmp_path):
    from safetensors.torch import save_file

    state = sd2_state_dict()
    save_file(state, str(tmp_path / "tiny21.safetensors"))
    write_tokenizer_files(tmp_path)
    components = load_components(tmp_path / "tiny21.safetensors")
    clip = HeadlessCLIP(components)
    tokens = clip.tokenize("a lighthouse")
    with torch.no_grad():
        penultimate = clip.encode_from_tokens(tokens)  # SD2 default: layer -2, final LN applied
        clip.clip_layer(-1)
        last = clip.encode_from_tokens(tokens)
        ids = tokens["input_ids"]
        torch.testing.assert_close(last[0], _open_clip_reference(state, ids, TEXT_LAYERS)[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(penultimate[0], _open_clip_reference(state, ids, TEXT_LAYERS - 1)[0],
                                   rtol=1e-4, atol=1e-4)
    assert tokens["input_ids"][0, -1] == components.tokenizer.convert_tokens_to_ids("!")  # OpenCLIP pads with 0
