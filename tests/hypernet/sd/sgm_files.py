"""SDXL base single files in the original SGM key layout, written by the tests themselves.

The layout below is written from the SGM model definition of SDXL base (openaimodel UNet with
label_emb, LDM autoencoder, CLIP ViT-L in transformers' layout under
conditioner.embedders.0.transformer., OpenCLIP ViT-bigG under conditioner.embedders.1.model.)
and checked at full size against the published totals of sd_xl_base_1.0 (2515 tensors; UNet
2,567,463,684 parameters). The loaded tests use the same layout at reduced widths and depths."""
import math

import torch

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


def save_sgm_file(folder, name, config, edit=None):
    """folder/name written with random_state(sgm_shapes(config)), after `edit(state)` if given."""
    from safetensors.torch import save_file

    state = random_state(sgm_shapes(config))
    if edit:
        edit(state)
    save_file(state, str(folder / name))
    return folder / name
