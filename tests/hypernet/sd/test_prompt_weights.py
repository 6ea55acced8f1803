"""ComfyUI's `(text)` / `(text:w)` emphasis: parsing and its effect on the conditioning."""
import pytest
import torch

from hypernet_studio.hypernet.sd.headless_clip import HeadlessCLIP
from hypernet_studio.hypernet.sd.prompt_weights import parse_weighted_prompt
from hypernet_studio.hypernet.sd.tiny import build_tiny_components


@pytest.mark.parametrize("text, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (cat) sat", [("a ", 1.0), ("cat", 1.1), (" sat", 1.0)]),
    ("((cat))", [("cat", 1.1 * 1.1)]),
    ("a (red cat:1.3), dog", [("a ", 1.0), ("red cat", 1.3), (", dog", 1.0)]),
    ("((cat:0.5) dog)", [("cat", 0.5), (" dog", 1.1)]),
    ("(time: noon)", [("time: noon", 1.1)]),
    ("a \\(cat\\) (dog)", [("a (cat) ", 1.0), ("dog", 1.1)]),
    ("unbalanced (cat", [("unbalanced (cat", 1.0)]),
    ("[cat]", [("[cat]", 1.0)]),
])
def test_parse_weighted_prompt(text, expected):
    parsed = parse_weighted_prompt(text)
    assert [segment for segment, _ in parsed] == [segment for segment, _ in expected]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in expected])


def test_emphasis_scales_away_from_the_empty_prompt():
    clip = HeadlessCLIP(build_tiny_components())
    with torch.no_grad():
        plain = clip.encode_from_tokens(clip.tokenize("a cat"))
        neutral = clip.encode_from_tokens(clip.tokenize("(a cat:1.0)"))
        weighted = clip.encode_from_tokens(clip.tokenize("a (cat:1.5)"))
        empty = clip.encode_from_tokens(clip.tokenize(""))
    torch.testing.assert_close(neutral, plain)
    tokens = clip.tokenize("a (cat:1.5)")
    positions = (tokens["weights"][0] == 1.5).nonzero().flatten().tolist()
    assert positions and tokens["input_ids"].shape == (1, 77)
    expected = plain.clone()
    expected[0, positions] = empty[0, positions] + (plain[0, positions] - empty[0, positions]) * 1.5
    torch.testing.assert_close(weighted, expected)
