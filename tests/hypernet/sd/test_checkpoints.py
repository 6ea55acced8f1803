"""Offline loading of checkpoints the test writes itself in the original SD (LDM) key layout.

The key layout below is written from the original Stable Diffusion model definition
(openaimodel UNet, LDM autoencoder, CLIP/OpenCLIP text towers), at reduced widths and
depths; the loader must infer every size from the tensor shapes."""
import json

import pytest
import torch

from hypernet_studio.hypernet.sd import checkpoints
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.sampling import sample
from hypernet_studio.hypernet.sd.tokenizer import bytes_to_unicode

C, MULT, RES, ATTN_LEVELS, Z = 32, (1, 2, 2), 1, (0, 1), 4
VAE_MULT, VAE_CH, VAE_RES = (1, 2, 2, 2), 16, 1
TEXT_H, TEXT_LAYERS, TEXT_I = 32, 2, 64


class Writer:
    """Fills a state dict with seeded random tensors."""

    def __init__(self, seed=0):
        self.generator = torch.Generator().manual_seed(seed)
        self.sd = {}

    def __call__(self, key, *shape):
        self.sd[key] = torch.randn(*shape, generator=self.generator) * 0.05

    def norm(self, key, ch):
        self.sd[key + ".weight"] = 1 + torch.randn(ch, generator=self.generator) * 0.05
        self.sd[key + ".bias"] = torch.randn(ch, generator=self.generator) * 0.05

    def linear(self, key, out, inp, bias=True):
        self(key + ".weight", out, inp)
        if bias:
            self(key + ".bias", out)

    def conv(self, key, out, inp, k=3):
        self(key + ".weight", out, inp, k, k)
        self(key + ".bias", out)


def _resblock(w, p, cin, cout, emb):
    w.norm(p + ".in_layers.0", cin)
    w.conv(p + ".in_layers.2", cout, cin)
    w.linear(p + ".emb_layers.1", cout, emb)
    w.norm(p + ".out_layers.0", cout)
    w.conv(p + ".out_layers.3", cout, cout)
    if cin != cout:
        w.conv(p + ".skip_connection", cout, cin, k=1)


def _transformer(w, p, ch, context, linear_proj):
    w.norm(p + ".norm", ch)
    for name in ("proj_in", "proj_out"):
        if linear_proj:
            w.linear(f"{p}.{name}", ch, ch)
        else:
            w.conv(f"{p}.{name}", ch, ch, k=1)
    b = p + ".transformer_blocks.0"
    for attn, kv in (("attn1", ch), ("attn2", context)):
        w.linear(f"{b}.{attn}.to_q", ch, ch, bias=False)
        w.linear(f"{b}.{attn}.to_k", ch, kv, bias=False)
        w.linear(f"{b}.{attn}.to_v", ch, kv, bias=False)
        w.linear(f"{b}.{attn}.to_out.0", ch, ch)
    w.linear(b + ".ff.net.0.proj", ch * 8, ch)
    w.linear(b + ".ff.net.2", ch, ch * 4)
    for n in ("norm1", "norm2", "norm3"):
        w.norm(f"{b}.{n}", ch)


def write_ldm_unet(w, context, linear_proj=False, prefix="model.diffusion_model."):
    emb = 4 * C
    w.linear(prefix + "time_embed.0", emb, C)
    w.linear(prefix + "time_embed.2", emb, emb)
    w.conv(prefix + "input_blocks.0.0", C, 4)
    chans, ch, index = [C], C, 1
    for level, mult in enumerate(MULT):
        for _ in range(RES):
            _resblock(w, f"{prefix}input_blocks.{index}.0", ch, mult * C, emb)
            ch = mult * C
            if level in ATTN_LEVELS:
                _transformer(w, f"{prefix}input_blocks.{index}.1", ch, context, linear_proj)
            chans.append(ch)
            index += 1
        if level != len(MULT) - 1:
            w.conv(f"{prefix}input_blocks.{index}.0.op", ch, ch)
            chans.append(ch)
            index += 1
    _resblock(w, prefix + "middle_block.0", ch, ch, emb)
    _transformer(w, prefix + "middle_block.1", ch, context, linear_proj)
    _resblock(w, prefix + "middle_block.2", ch, ch, emb)
    index = 0
    for level, mult in reversed(list(enumerate(MULT))):
        for i in range(RES + 1):
            skip = chans.pop()
            _resblock(w, f"{prefix}output_blocks.{index}.0", ch + skip, mult * C, emb)
            ch = mult * C
            part = 1
            if level in ATTN_LEVELS:
                _transformer(w, f"{prefix}output_blocks.{index}.1", ch, context, linear_proj)
                part = 2
            if level and i == RES:
                w.conv(f"{prefix}output_blocks.{index}.{part}.conv", ch, ch)
            index += 1
    w.norm(prefix + "out.0", C)
    w.conv(prefix + "out.2", 4, C)


def _vae_resblock(w, p, cin, cout):
    w.norm(p + ".norm1", cin)
    w.conv(p + ".conv1", cout, cin)
    w.norm(p + ".norm2", cout)
    w.conv(p + ".conv2", cout, cout)
    if cin != cout:
        w.conv(p + ".nin_shortcut", cout, cin, k=1)


def _vae_mid(w, p, ch):
    _vae_resblock(w, p + ".block_1", ch, ch)
    w.norm(p + ".attn_1.norm", ch)
    for name in ("q", "k", "v", "proj_out"):
        w.conv(f"{p}.attn_1.{name}", ch, ch, k=1)
    _vae_resblock(w, p + ".block_2", ch, ch)


def write_ldm_vae(w, prefix="first_stage_model."):
    widths = [VAE_CH * m for m in VAE_MULT]
    w.conv(prefix + "encoder.conv_in", widths[0], 3)
    ch = widths[0]
    for level, width in enumerate(widths):
        for j in range(VAE_RES):  # LDM's encoder has num_res_blocks blocks per level
            _vae_resblock(w, f"{prefix}encoder.down.{level}.block.{j}", ch, width)
            ch = width
        if level != len(widths) - 1:
            w.conv(f"{prefix}encoder.down.{level}.downsample.conv", ch, ch)
    _vae_mid(w, prefix + "encoder.mid", ch)
    w.norm(prefix + "encoder.norm_out", ch)
    w.conv(prefix + "encoder.conv_out", 2 * Z, ch)
    w.conv(prefix + "quant_conv", 2 * Z, 2 * Z, k=1)
    w.conv(prefix + "post_quant_conv", Z, Z, k=1)
    w.conv(prefix + "decoder.conv_in", ch, Z)
    _vae_mid(w, prefix + "decoder.mid", ch)
    for level in reversed(range(len(widths))):
        for j in range(VAE_RES + 1):  # the decoder has num_res_blocks + 1 blocks per level
            _vae_resblock(w, f"{prefix}decoder.up.{level}.block.{j}", ch, widths[level])
            ch = widths[level]
        if level != 0:
            w.conv(f"{prefix}decoder.up.{level}.upsample.conv", ch, ch)
    w.norm(prefix + "decoder.norm_out", ch)
    w.conv(prefix + "decoder.conv_out", 3, ch)


VOCAB = len(bytes_to_unicode()) * 2 + 2


def write_clip_text(w, prefix="cond_stage_model.transformer.text_model.", vocab=VOCAB):
    w(prefix + "embeddings.token_embedding.weight", vocab, TEXT_H)
    w(prefix + "embeddings.position_embedding.weight", 77, TEXT_H)
    w.sd[prefix + "embeddings.position_ids"] = torch.arange(77)[None]
    for i in range(TEXT_LAYERS):
        p = f"{prefix}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w.linear(p + "self_attn." + name, TEXT_H, TEXT_H)
        w.norm(p + "layer_norm1", TEXT_H)
        w.norm(p + "layer_norm2", TEXT_H)
        w.linear(p + "mlp.fc1", TEXT_I, TEXT_H)
        w.linear(p + "mlp.fc2", TEXT_H, TEXT_I)
    w.norm(prefix + "final_layer_norm", TEXT_H)


def write_open_clip_text(w, prefix="cond_stage_model.model."):
    w(prefix + "token_embedding.weight", VOCAB, TEXT_H)
    w(prefix + "positional_embedding", 77, TEXT_H)
    for i in range(TEXT_LAYERS):
        p = f"{prefix}transformer.resblocks.{i}."
        w.norm(p + "ln_1", TEXT_H)
        w.norm(p + "ln_2", TEXT_H)
        w.linear(p + "attn.in_proj", 3 * TEXT_H, TEXT_H)
        w.sd[p + "attn.in_proj_weight"] = w.sd.pop(p + "attn.in_proj.weight")
        w.sd[p + "attn.in_proj_bias"] = w.sd.pop(p + "attn.in_proj.bias")
        w.linear(p + "attn.out_proj", TEXT_H, TEXT_H)
        w.linear(p + "mlp.c_fc", TEXT_I, TEXT_H)
        w.linear(p + "mlp.c_proj", TEXT_H, TEXT_I)
    w.norm(prefix + "ln_final", TEXT_H)
    w(prefix + "text_projection", TEXT_H, TEXT_H)
    w.sd[prefix + "logit_scale"] = torch.tensor(4.6)


def write_tokenizer_files(folder):
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def sd1_state_dict():
    w = Writer(0)
    write_ldm_unet(w, context=TEXT_H)
    write_ldm_vae(w)
    write_clip_text(w)
    return w.sd


def sd2_state_dict():
    w = Writer(1)
    write_ldm_unet(w, context=TEXT_H, linear_proj=True)
    write_ldm_vae(w)
    write_open_clip_text(w)
    return w.sd


@pytest.fixture(scope="module")
def sd1_file(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("ckpt")
    state = sd1_state_dict()
    save_file(state, str(folder / "tiny15.safetensors"))
    torch.save({"state_dict": state, "global_step": 1}, str(folder / "tiny15.ckpt"))
    write_tokenizer_files(folder)
    return folder / "tiny15.safetensors", state


def test_sd1_single_file_loads_with_the_original_weights(sd1_file):
    path, state = sd1_file
    assert path.stat().st_size < 20 * 2**20
    components = checkpoints.load_components(path)
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
    components = checkpoints.load_components(tmp_path / "checkpoints" / "mine.safetensors",
                                             tokenizer_dirs=[tmp_path / "tokenizers"])
    _, clip, _ = headless_objects(components)
    tokens = clip.tokenize("a photo of a cat")
    assert tokens["input_ids"][0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    with torch.inference_mode():
        assert clip.encode_from_tokens(tokens).shape == (1, 77, TEXT_H)


def test_ckpt_loads_weights_only_and_matches_safetensors(sd1_file):
    path, state = sd1_file
    from_ckpt = checkpoints.load_components(path.with_suffix(".ckpt"))
    torch.testing.assert_close(from_ckpt.unet.state_dict()["conv_out.weight"],
                               state["model.diffusion_model.out.2.weight"])


def test_half_precision_files_load_as_fp32_unless_asked(tmp_path, sd1_file):
    from safetensors.torch import save_file

    _, state = sd1_file
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(tmp_path / "half.sft"))
    write_tokenizer_files(tmp_path)
    default = checkpoints.load_components(tmp_path / "half.sft")
    assert {p.dtype for m in (default.unet, default.text_encoder, default.vae) for p in m.parameters()} == \
        {torch.float32}
    half = checkpoints.load_components(tmp_path / "half.sft", dtype=torch.float16)
    assert next(half.unet.parameters()).dtype == torch.float16
    assert next(half.vae.parameters()).dtype == torch.float32  # SD VAEs overflow in fp16


def test_sd2_layout_open_clip_is_converted(tmp_path):
    from safetensors.torch import save_file

    state = sd2_state_dict()
    save_file(state, str(tmp_path / "tiny21.safetensors"))
    tokenizers = tmp_path / "models" / "tokenizers" / "sd2"
    tokenizers.mkdir(parents=True)
    write_tokenizer_files(tokenizers)
    components = checkpoints.load_components(tmp_path / "tiny21.safetensors", model_type="v",
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


def _keys(*names):
    return {name: torch.zeros(1) for name in names}


def test_family_detection_on_synthetic_key_sets():
    unet_key = "model.diffusion_model.input_blocks.0.0.weight"
    sd1_text_key = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    assert checkpoints.detect_family(_keys(unet_key, sd1_text_key)) \
        == "sd1"
    assert checkpoints.detect_family(_keys(unet_key, "cond_stage_model.model.transformer.resblocks.0.ln_1.weight")) \
        == "sd2"
    context_1024 = {unet_key: torch.zeros(1),
                    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight":
                        torch.zeros(320, 1024)}
    assert checkpoints.detect_family(context_1024) == "sd2"
    with pytest.raises(checkpoints.CheckpointError, match="SDXL"):
        checkpoints.detect_family(_keys(unet_key, "conditioner.embedders.1.model.ln_final.weight"), "xl.safetensors")
    with pytest.raises(checkpoints.CheckpointError, match="LoRA"):
        checkpoints.detect_family(_keys("lora_unet_down_blocks_0.lora_up.weight"), "lora.safetensors")
    with pytest.raises(checkpoints.CheckpointError, match="standalone VAE"):
        checkpoints.detect_family(_keys("encoder.conv_in.weight", "decoder.conv_out.weight"))
    with pytest.raises(checkpoints.CheckpointError, match="no known text encoder"):
        checkpoints.detect_family(_keys(unet_key))


def test_prediction_type_rules(tmp_path):
    probe = checkpoints.V_PREDICTION_PROBE
    generator = torch.Generator().manual_seed(0)
    trained = {probe: torch.randn(640, generator=generator) * 0.2}
    fresh = {probe: torch.randn(640, generator=generator) * 0.01}
    assert checkpoints.detect_prediction_type(trained, "sd2") == "v_prediction"
    assert checkpoints.detect_prediction_type(fresh, "sd2") == "epsilon"
    assert checkpoints.detect_prediction_type(trained, "sd1") == "epsilon"  # the heuristic is for SD2 only
    assert checkpoints.detect_prediction_type(trained, "sd2", model_type="epsilon") == "epsilon"
    assert checkpoints.detect_prediction_type({"v_pred": torch.zeros(())}, "sd1") == "v_prediction"
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert checkpoints.detect_prediction_type(fresh, "sd2", checkpoint) == "v_prediction"
    with pytest.raises(checkpoints.CheckpointError, match="model_type"):
        checkpoints.detect_prediction_type(fresh, "sd2", model_type="flow")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    import pickle

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": Payload()}}, str(path), pickle_module=pickle)
    with pytest.raises(checkpoints.CheckpointError, match="evil.ckpt"):
        checkpoints.read_state_dict(path)


def test_diffusers_folder_round_trip(tmp_path, sd1_file):
    path, _ = sd1_file
    components = checkpoints.load_components(path)
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
    loaded = checkpoints.load_components(folder)
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

    from hypernet_studio.hypernet.sd.headless import HeadlessCLIP

    state = sd2_state_dict()
    save_file(state, str(tmp_path / "tiny21.safetensors"))
    write_tokenizer_files(tmp_path)
    components = checkpoints.load_components(tmp_path / "tiny21.safetensors")
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
