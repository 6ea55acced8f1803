"""SDXL's CLIP object against both text encoders written out from their definitions: the
conditioning is the two penultimate layers side by side plus OpenCLIP-G's pooled output, with
ComfyUI's emphasis, clip-layer and chunking rules (the file is sgm_files.py's reduced SDXL)."""
import pytest
import torch
import torch.nn.functional as F

from hypernet_studio.hypernet.sd.headless import headless_objects

from .sgm_files import CLIP_G, CLIP_L, SMALL


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
