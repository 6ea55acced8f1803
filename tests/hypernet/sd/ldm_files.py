"""Single files in the original SD1/SD2 (LDM) key layout, written by the tests themselves.

The key layout below is written from the original Stable Diffusion model definition
(openaimodel UNet, LDM autoencoder, CLIP/OpenCLIP text towers), at reduced widths and
depths; the loader must infer every size from the tensor shapes."""
import json

import torch

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
