"""The built-in tiny checkpoint: deterministic, small, SD-shaped."""
import torch

from hypernet_studio.hypernet.sd import tiny
from hypernet_studio.hypernet.sd.headless import headless_objects


def test_tiny_build_is_bit_identical_and_cached():
    first = tiny._build(0)
    second = tiny._build(0)
    other_seed = tiny._build(1)
    for name in ("unet", "text_encoder", "vae"):
        a, b = getattr(first, name).state_dict(), getattr(second, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(first.unet.conv_in.weight, other_seed.unet.conv_in.weight)
    assert tiny.build_tiny_components(0) is tiny.build_tiny_components(0)


def test_tiny_build_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny._build(5)
    torch.testing.assert_close(torch.rand(3), expected)


def test_tiny_is_small_and_sd_shaped():
    components = tiny.build_tiny_components()
    parameters = sum(p.numel() for m in (components.unet, components.text_encoder, components.vae)
                     for p in m.parameters())
    assert parameters * 4 < 8 * 2**20  # a few MB of fp32
    model, clip, vae = headless_objects(components)
    assert components.family == "tiny" and components.prediction_type == "epsilon"
    assert components.alphas_cumprod.shape == (1000,) and components.alphas_cumprod.dtype == torch.float32
    pixels = torch.rand(1, 64, 48, 3)
    with torch.no_grad():
        latent = vae.encode(pixels)
        assert latent.shape == (1, 4, 8, 6)
        decoded = vae.decode(latent)
    assert decoded.shape == (1, 64, 48, 3) and 0 <= decoded.min() and decoded.max() <= 1
    with torch.no_grad():
        cond = clip.encode_texts(["a cat", "a dog"])
    assert cond.shape == (2, 77, components.context_dim)
    assert not torch.allclose(cond[0], cond[1])


def test_tokenizer_round_trips_text_and_chunks_long_prompts():
    components = tiny.build_tiny_components()
    _, clip, _ = headless_objects(components)
    tokenizer = components.tokenizer
    ids = tokenizer("a photo of the cat", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "a photo of the cat"
    tokens = clip.tokenize("a " * 100)  # "a</w>" is one token: 100 tokens = 2 chunks
    assert tokens["input_ids"].shape == (2, 77)
    assert (tokens["input_ids"][:, 0] == tokenizer.bos_token_id).all()
    with torch.no_grad():
        assert clip.encode_from_tokens(tokens).shape == (1, 154, components.context_dim)


def test_clip_layer_changes_output_and_validates():
    _, clip, _ = headless_objects(tiny.build_tiny_components())
    skipped = clip.clone()
    skipped.clip_layer(-2)
    assert clip.layer_idx == -1
    tokens = clip.tokenize("a cat")
    with torch.no_grad():
        assert not torch.allclose(clip.encode_from_tokens(tokens), skipped.encode_from_tokens(tokens))
    try:
        skipped.clip_layer(-3)
    except ValueError as error:
        assert "2 layers" in str(error)
    else:
        raise AssertionError("clip_layer(-3) on a 2-layer encoder must fail")


def test_long_prompts_break_between_words_like_comfyui():
    _, clip, _ = headless_objects(tiny.build_tiny_components())
    tokenizer = clip.tokenizer
    a = tokenizer.convert_tokens_to_ids("a</w>")
    pad = tokenizer.pad_token_id
    short_word = clip.tokenize("a " * 74 + "xyz")["input_ids"]  # "xyz" is 3 tokens: does not fit in 1
    assert short_word.shape == (2, 77)
    assert short_word[0, 1:75].tolist() == [a] * 74 and short_word[0, 75] == tokenizer.eos_token_id
    assert short_word[1, 1:4].tolist() == tokenizer("xyz", add_special_tokens=False)["input_ids"]
    long_word = clip.tokenize("a " * 74 + "q" * 10)["input_ids"]  # 10 tokens > 8: split across chunks
    q, q_end = tokenizer.convert_tokens_to_ids("q"), tokenizer.convert_tokens_to_ids("q</w>")
    assert long_word[0, 75] == q and long_word[0, 76] == tokenizer.eos_token_id
    assert long_word[1, 1:10].tolist() == [q] * 8 + [q_end] and long_word[1, 10] == tokenizer.eos_token_id
    assert (long_word[1, 11:] == pad).all()
