"""SDXL base single files in the original SGM key layout, written by the test itself.

The layout below is written from the SGM model definition of SDXL base (openaimodel UNet with
label_emb, LDM autoencoder, CLIP ViT-L in transformers' layout under
conditioner.embedders.0.transformer., OpenCLIP ViT-bigG under conditioner.embedders.1.model.)
and checked at full size against the published totals of sd_xl_base_1.0 (2515 tensors; UNet
2,567,463,684 parameters). The loaded tests use the same layout at reduced widths and depths."""
import math

import pytest
import torch
import torch.nn.functional as F

from hypernet_studio.hypernet.sd import checkpoints, sdxl_checkpoint
from hypernet_studio.hypernet.sd.components import CheckpointError
from hypernet_studio.hypernet.sd.headless import headless_objects

UNET, VAE = "model.diffusion_model.", "first_stage_model."
CLIP_L, CLIP_G = "conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.1.model."

FULL = dict(mc=320, mult=(1, 2, 4), nrb=2, depth=(0, 2, 10), depth_mid=10, depth_out=None, in_ch=4, head=64,
            vae_ch=128, vae_mult=(1, 2, 4, 4), vae_nrb=2, l_dim=768, l_layers=12, l_ff=3072,
            g_dim=1280, g_layers=32, g_ff=5120, g_proj=1280, vocab=49408, size_values=6, refiner=False)
# Reduced: every structural feature kept (3 levels, none with attention at the first, 2 res
# blocks, linear transformer projections, multi-block transformers, down/up samplers, adm);
# the projection is narrower than OpenCLIP-G's width so a missed transpose shows.
SMALL = dict(FULL, mc=32, depth=(0, 1, 2), depth_mid=2, vae_ch=16, vae_mult=(1, 2, 2, 2), vae_nrb=1,
             l_dim=64, l_layers=3, l_ff=128, g_dim=96, g_layers=4, g_ff=192, g_proj=80)


def sgm_shapes(c):
    """{key: shape} of an SDXL-style single file in the SGM layout."""
    shapes, emb, context = {}, 4 * c["mc"], c["l_dim"] + c["g_dim"]
    if c["refiner"]:
        context = c["g_dim"]

    def linear(key, out, inp, bias=True):
        shapes[key + ".weight"] = (out, inp)
        if bias:
            shapes[key + ".bias"] = (out,)

    def conv(key, out, inp, k=3):
        shapes[key + ".weight"] = (out, inp, k, k)
        shapes[key + ".bias"] = (out,)

    def norm(key, ch):
        shapes[key + ".weight"] = shapes[key + ".bias"] = (ch,)

    def resblock(key, cin, cout):
        norm(key + ".in_layers.0", cin)
        conv(key + ".in_layers.2", cout, cin)
        linear(key + ".emb_layers.1", cout, emb)
        norm(key + ".out_layers.0", cout)
        conv(key + ".out_layers.3", cout, cout)
        if cin != cout:
            conv(key + ".skip_connection", cout, cin, k=1)

    def transformer(key, ch, depth):
        norm(key + ".norm", ch)
        linear(key + ".proj_in", ch, ch)
        linear(key + ".proj_out", ch, ch)
        for j in range(depth):
            block = f"{key}.transformer_blocks.{j}"
            for attn, kv in (("attn1", ch), ("attn2", context)):
                linear(f"{block}.{attn}.to_q", ch, ch, bias=False)
                linear(f"{block}.{attn}.to_k", ch, kv, bias=False)
                linear(f"{block}.{attn}.to_v", ch, kv, bias=False)
                linear(f"{block}.{attn}.to_out.0", ch, ch)
            linear(block + ".ff.net.0.proj", 8 * ch, ch)  # GEGLU: value and gate
            linear(block + ".ff.net.2", ch, 4 * ch)
            for n in (1, 2, 3):
                norm(f"{block}.norm{n}", ch)

    _unet_shapes(c, emb, linear, conv, norm, resblock, transformer)
    _vae_shapes(c, conv, norm)
    _text_shapes(c, shapes, linear, norm)
    return shapes


def _unet_shapes(c, emb, linear, conv, norm, resblock, transformer):
    u, mc = UNET, c["mc"]
    linear(u + "time_embed.0", emb, mc)
    linear(u + "time_embed.2", emb, emb)
    linear(u + "label_emb.0.0", emb, c["g_proj"] + c["size_values"] * 256)
    linear(u + "label_emb.0.2", emb, emb)
    conv(u + "input_blocks.0.0", mc, c["in_ch"])
    skips, ch, index = [mc], mc, 1
    for level, mult in enumerate(c["mult"]):
        for _ in range(c["nrb"]):
            resblock(f"{u}input_blocks.{index}.0", ch, mult * mc)
            ch = mult * mc
            if c["depth"][level]:
                transformer(f"{u}input_blocks.{index}.1", ch, c["depth"][level])
            skips.append(ch)
            index += 1
        if level != len(c["mult"]) - 1:
            conv(f"{u}input_blocks.{index}.0.op", ch, ch)
            skips.append(ch)
            index += 1
    resblock(u + "middle_block.0", ch, ch)
    transformer(u + "middle_block.1", ch, c["depth_mid"])
    resblock(u + "middle_block.2", ch, ch)
    index = 0
    for level in reversed(range(len(c["mult"]))):
        for i in range(c["nrb"] + 1):
            resblock(f"{u}output_blocks.{index}.0", ch + skips.pop(), c["mult"][level] * mc)
            ch, part = c["mult"][level] * mc, 1
            depth = (c["depth_out"] or c["depth"])[level]
            depth = depth[i] if isinstance(depth, (list, tuple)) else depth
            if depth:
                transformer(f"{u}output_blocks.{index}.1", ch, depth)
                part = 2
            if level and i == c["nrb"]:
                conv(f"{u}output_blocks.{index}.{part}.conv", ch, ch)
            index += 1
    norm(u + "out.0", mc)
    conv(u + "out.2", 4, mc)


def _vae_shapes(c, conv, norm):
    v, widths = VAE, [c["vae_ch"] * m for m in c["vae_mult"]]

    def resblock(key, cin, cout):
        norm(key + ".norm1", cin)
        conv(key + ".conv1", cout, cin)
        norm(key + ".norm2", cout)
        conv(key + ".conv2", cout, cout)
        if cin != cout:
            conv(key + ".nin_shortcut", cout, cin, k=1)

    def middle(key, ch):
        resblock(key + ".block_1", ch, ch)
        norm(key + ".attn_1.norm", ch)
        for name in ("q", "k", "v", "proj_out"):
            conv(f"{key}.attn_1.{name}", ch, ch, k=1)
        resblock(key + ".block_2", ch, ch)

    conv(v + "encoder.conv_in", widths[0], 3)
    ch = widths[0]
    for level, width in enumerate(widths):
        for j in range(c["vae_nrb"]):
            resblock(f"{v}encoder.down.{level}.block.{j}", ch, width)
            ch = width
        if level != len(widths) - 1:
            conv(f"{v}encoder.down.{level}.downsample.conv", ch, ch)
    middle(v + "encoder.mid", ch)
    norm(v + "encoder.norm_out", ch)
    conv(v + "encoder.conv_out", 8, ch)
    conv(v + "quant_conv", 8, 8, k=1)
    conv(v + "post_quant_conv", 4, 4, k=1)
    conv(v + "decoder.conv_in", ch, 4)
    middle(v + "decoder.mid", ch)
    for level in reversed(range(len(widths))):
        for j in range(c["vae_nrb"] + 1):
            resblock(f"{v}decoder.up.{level}.block.{j}", ch, widths[level])
            ch = widths[level]
        if level:
            conv(f"{v}decoder.up.{level}.upsample.conv", ch, ch)
    norm(v + "decoder.norm_out", ch)
    conv(v + "decoder.conv_out", 3, ch)


def _text_shapes(c, shapes, linear, norm):
    if not c["refiner"]:  # CLIP ViT-L, transformers' names; SDXL files carry no projection for it
        t, d = CLIP_L, c["l_dim"]
        shapes[t + "embeddings.token_embedding.weight"] = (c["vocab"], d)
        shapes[t + "embeddings.position_embedding.weight"] = (77, d)
        shapes[t + "embeddings.position_ids"] = (1, 77)
        for i in range(c["l_layers"]):
            layer = f"{t}encoder.layers.{i}"
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                linear(f"{layer}.self_attn.{name}", d, d)
            norm(layer + ".layer_norm1", d)
            norm(layer + ".layer_norm2", d)
            linear(layer + ".mlp.fc1", c["l_ff"], d)
            linear(layer + ".mlp.fc2", d, c["l_ff"])
        norm(t + "final_layer_norm", d)
    g, d = ("conditioner.embedders.0.model." if c["refiner"] else CLIP_G), c["g_dim"]
    shapes[g + "token_embedding.weight"] = (c["vocab"], d)
    shapes[g + "positional_embedding"] = (77, d)
    for i in range(c["g_layers"]):  # OpenCLIP: packed q/k/v
        block = f"{g}transformer.resblocks.{i}"
        shapes[block + ".attn.in_proj_weight"] = (3 * d, d)
        shapes[block + ".attn.in_proj_bias"] = (3 * d,)
        linear(block + ".attn.out_proj", d, d)
        norm(block + ".ln_1", d)
        norm(block + ".ln_2", d)
        linear(block + ".mlp.c_fc", c["g_ff"], d)
        linear(block + ".mlp.c_proj", d, c["g_ff"])
    norm(g + "ln_final", d)
    shapes[g + "text_projection"] = (d, c["g_proj"])  # used as x @ P
    shapes[g + "logit_scale"] = ()


def random_state(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[-1]).reshape(shape)
        elif key.endswith("logit_scale"):
            state[key] = torch.tensor(math.log(100.0))
        elif len(shape) >= 2:  # variance-preserving scale, so activations stay near 1 through the layers
            fan_in = shape[0] if key.endswith("text_projection") else math.prod(shape[1:])
            scale = 0.02 if "embedding" in key else fan_in ** -0.5
            state[key] = torch.randn(shape, generator=generator) * scale
        elif key.endswith(".weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=generator)
    return state


def test_full_size_layout_is_sdxl_base_and_gives_its_diffusers_config():
    shapes = sgm_shapes(FULL)
    counts = {prefix: sum(k.startswith(prefix) for k in shapes) for prefix in (UNET, VAE, CLIP_L, CLIP_G)}
    assert len(shapes) == 2515 and counts == {UNET: 1680, VAE: 248, CLIP_L: 197, CLIP_G: 390}
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    assert checkpoints.detect_family(meta) == "sdxl"
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


@pytest.fixture(scope="module")
def sdxl_file(tmp_path_factory):
    from safetensors.torch import save_file

    state = random_state(sgm_shapes(SMALL))
    path = tmp_path_factory.mktemp("sdxl") / "tiny_xl.safetensors"
    save_file(state, str(path))
    return path, state


@pytest.fixture(scope="module")
def sdxl_components(sdxl_file):
    return checkpoints.load_components(sdxl_file[0])


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


# --------------------------------------------------------------------------- text conditioning
def _text_tower(x, blocks, act):
    """CLIP's text transformer from its definition: pre-LN residual blocks with causal multi-head
    self-attention (64-channel heads, at least one) and an MLP. Returns the input and every
    block's output (no final LayerNorm)."""
    width, tokens = x.shape[-1], x.shape[1]
    heads = max(width // 64, 1)
    causal = torch.full((tokens, tokens), float("-inf")).triu(1)
    states = [x]
    for b in blocks:
        h = F.layer_norm(x, (width,), *b["ln_1"])
        q, k, v = (h @ b[n][0].T + b[n][1] for n in ("q", "k", "v"))
        split = lambda t: t.view(t.shape[0], tokens, heads, -1).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        attended = (torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + causal, -1) @ v)
        x = x + attended.transpose(1, 2).reshape(x.shape) @ b["out"][0].T + b["out"][1]
        h = act(F.layer_norm(x, (width,), *b["ln_2"]) @ b["fc1"][0].T + b["fc1"][1])
        x = x + h @ b["fc2"][0].T + b["fc2"][1]
        states.append(x)
    return states


def clip_l_reference(state, ids):
    """CLIP-L (transformers' key names, quick-GELU): (hidden states, final LayerNorm weights)."""
    get = lambda name: state[CLIP_L + name]
    pair = lambda name: (get(name + ".weight"), get(name + ".bias"))
    blocks = [{"ln_1": pair(f"encoder.layers.{i}.layer_norm1"), "ln_2": pair(f"encoder.layers.{i}.layer_norm2"),
               **{n: pair(f"encoder.layers.{i}.self_attn.{n}_proj") for n in ("q", "k", "v", "out")},
               "fc1": pair(f"encoder.layers.{i}.mlp.fc1"), "fc2": pair(f"encoder.layers.{i}.mlp.fc2")}
              for i in range(SMALL["l_layers"])]
    x = get("embeddings.token_embedding.weight")[ids] + get("embeddings.position_embedding.weight")
    return _text_tower(x, blocks, lambda t: t * torch.sigmoid(1.702 * t)), pair("final_layer_norm")


def open_clip_g_reference(state, ids):
    """OpenCLIP-G (open_clip's key names: packed q/k/v, exact GELU): (hidden states, ln_final)."""
    get = lambda name: state[CLIP_G + name]
    pair = lambda name: (get(name + ".weight"), get(name + ".bias"))
    blocks = []
    for i in range(SMALL["g_layers"]):
        p = f"transformer.resblocks.{i}."
        packed = zip(get(p + "attn.in_proj_weight").chunk(3), get(p + "attn.in_proj_bias").chunk(3))
        blocks.append({"ln_1": pair(p + "ln_1"), "ln_2": pair(p + "ln_2"), **dict(zip("qkv", packed)),
                       "out": pair(p + "attn.out_proj"), "fc1": pair(p + "mlp.c_fc"), "fc2": pair(p + "mlp.c_proj")})
    x = get("token_embedding.weight")[ids] + get("positional_embedding")
    return _text_tower(x, blocks, F.gelu), pair("ln_final")


def pooled_reference(state, ids_g):
    """OpenCLIP's text embedding: final LayerNorm of the last block at the first end token, times P."""
    states, ln_final = open_clip_g_reference(state, ids_g)
    normed = F.layer_norm(states[-1], (SMALL["g_dim"],), *ln_final)
    first_end = (ids_g == 49407).int().argmax(dim=1)
    return normed[torch.arange(len(ids_g)), first_end] @ state[CLIP_G + "text_projection"]


def _ids(body, pad):
    return torch.tensor([[49406] + body + [49407] + [pad] * (75 - len(body))])


def _close(actual, expected):
    """fp32 agreement relative to the size of the values compared."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=2e-6 * max(scale, 1.0))


def test_conditioning_is_both_penultimate_layers_side_by_side_and_pooled_g(sdxl_file, sdxl_components):
    _, state = sdxl_file
    _, clip, _ = headless_objects(sdxl_components)
    tokens = clip.tokenize("a photo of a cat")
    body = [320, 1125, 539, 320, 2368]  # CLIP's vocabulary: a photo of a cat
    assert torch.equal(tokens["l"]["input_ids"], _ids(body, 49407))  # CLIP-L pads with the end token
    assert torch.equal(tokens["g"]["input_ids"], _ids(body, 0))  # OpenCLIP-G pads with 0 ("!")
    with torch.no_grad():
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    l_states, _ = clip_l_reference(state, _ids(body, 49407))
    g_states, _ = open_clip_g_reference(state, _ids(body, 0))
    assert cond.shape == (1, 77, 160) and pooled.shape == (1, SMALL["g_proj"])
    _close(cond, torch.cat([l_states[-2], g_states[-2]], dim=-1))  # no final LayerNorm on either
    _close(pooled, pooled_reference(state, _ids(body, 0)))


def test_emphasis_is_per_encoder_and_leaves_the_pooled_output(sdxl_file, sdxl_components):
    _, state = sdxl_file
    _, clip, _ = headless_objects(sdxl_components)
    tokens = clip.tokenize("a photo of a (cat:1.3)")
    weights = torch.ones(1, 77, 1)
    weights[0, 5] = 1.3
    assert torch.equal(tokens["g"]["weights"], weights[..., 0]) and torch.equal(tokens["l"]["weights"], weights[..., 0])
    with torch.no_grad():
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    body = [320, 1125, 539, 320, 2368]
    sides = []
    for reference, pad in ((clip_l_reference, 49407), (open_clip_g_reference, 0)):
        z, empty = reference(state, _ids(body, pad))[0][-2], reference(state, _ids([], pad))[0][-2]
        sides.append(empty + (z - empty) * weights)  # each against its own empty-prompt encoding
    _close(cond, torch.cat(sides, dim=-1))
    _close(pooled, pooled_reference(state, _ids(body, 0)))


def test_clip_layer_reads_both_encoders_and_falls_back_past_the_shallower(sdxl_file, sdxl_components):
    _, state = sdxl_file
    _, clip, _ = headless_objects(sdxl_components)
    body = [320, 2368]  # a cat
    l_states, l_norm = clip_l_reference(state, _ids(body, 49407))
    g_states, _ = open_clip_g_reference(state, _ids(body, 0))
    for layer in (-1, -3, -4):  # CLIP-L has 3 layers, OpenCLIP-G 4 here
        skipped = clip.clone()
        skipped.clip_layer(layer)
        with torch.no_grad():
            cond = skipped.encode_from_tokens(skipped.tokenize("a cat"))
        left = l_states[layer] if -layer <= SMALL["l_layers"] else F.layer_norm(l_states[-1], (64,), *l_norm)
        _close(cond, torch.cat([left, g_states[layer]], dim=-1))
    assert clip.layer_idx == -2
    with pytest.raises(ValueError, match="4 layers"):
        clip.clone().clip_layer(-5)


def test_long_prompts_encode_in_chunks_with_chunk_zeros_pooled_output(sdxl_file, sdxl_components):
    _, state = sdxl_file
    _, clip, _ = headless_objects(sdxl_components)
    tokens = clip.tokenize("a " * 80)  # "a" is one token: 75 + 5
    assert tokens["g"]["input_ids"].shape == (2, 77)
    with torch.no_grad():
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    assert cond.shape == (1, 154, 160)
    second = [_ids([320] * 5, pad) for pad in (49407, 0)]
    _close(cond[:, 77:], torch.cat([clip_l_reference(state, second[0])[0][-2],
                                    open_clip_g_reference(state, second[1])[0][-2]], dim=-1))
    _close(pooled, pooled_reference(state, _ids([320] * 75, 0)))
    with torch.no_grad():
        training = clip.encode_conditioning(["a photo of a cat", "a " * 80])
    assert training.context.shape == (2, 77, 160) and training.pooled.shape == (2, SMALL["g_proj"])
    _close(training.pooled[1:], pooled)  # truncated to one chunk: chunk 0
    _close(training.context[:1], clip.encode_from_tokens(clip.tokenize("a photo of a cat")))


# --------------------------------------------------------------------------- other SDXL layouts
def _save(tmp_path, name, config, edit=None):
    from safetensors.torch import save_file

    state = random_state(sgm_shapes(config))
    if edit:
        edit(state)
    save_file(state, str(tmp_path / name))
    return tmp_path / name


def test_refiner_inpainting_and_edm_files_are_refused_saying_what_they_are(tmp_path):
    small_vocab = dict(SMALL, vocab=512)
    refiner = _save(tmp_path, "refiner.safetensors", dict(small_vocab, refiner=True, size_values=5))
    with pytest.raises(CheckpointError, match=r"refiner\.safetensors: this is an SDXL refiner .*only SDXL base"):
        checkpoints.load_components(refiner)
    inpainting = _save(tmp_path, "inpaint.safetensors", dict(small_vocab, in_ch=9))
    with pytest.raises(CheckpointError, match=r"SDXL inpainting model \(the UNet takes 9 input channels\)"):
        checkpoints.load_components(inpainting)
    pix2pix = _save(tmp_path, "ip2p.safetensors", dict(small_vocab, in_ch=8))
    with pytest.raises(CheckpointError, match="instruct-pix2pix"):
        checkpoints.load_components(pix2pix)
    playground = _save(tmp_path, "pg.safetensors", small_vocab,
                       lambda s: s.update(edm_mean=torch.zeros(1, 4, 1, 1), edm_std=torch.ones(1, 4, 1, 1)))
    with pytest.raises(CheckpointError, match="Playground"):
        checkpoints.load_components(playground)
    no_clip_l = {k: torch.zeros(2, 2) for k in (UNET + "input_blocks.0.0.weight", CLIP_G + "ln_final.weight")}
    with pytest.raises(CheckpointError, match="without 'conditioner.embedders.0.transformer.*'"):
        checkpoints.detect_family(no_clip_l, "partial.safetensors")


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
    loaded = checkpoints.load_components(folder)
    assert (loaded.family, loaded.prediction_type, loaded.latent_scale_factor) == ("sdxl", "epsilon", 0.13025)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(components, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (loaded.tokenizer.pad_token_id, loaded.tokenizer_2.pad_token_id) == (49407, 0)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["projection_class_embeddings_input_dim"] = SMALL["g_proj"] + 5 * 256
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="refiner"):
        checkpoints.load_components(folder)
