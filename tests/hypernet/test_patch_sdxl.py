"""Apply on SDXL (the built-in tiny SDXL model), and the width-mismatch warning between the SD1
and SDXL families, in both directions."""
from __future__ import annotations

import pytest
import torch

from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.patch import apply_hypernetwork, check_widths
from hypernet_studio.hypernet.sd import tiny_sdxl
from hypernet_studio.hypernet.sd.headless import HeadlessModel
from hypernet_studio.hypernet.sd.tiny import build_tiny_components
from hypernet_studio.hypernet.spec import FAMILY_SIZES, HypernetSpec


def _network(sizes, name="hn"):
    spec = HypernetSpec(layer_structure=[1, 2, 1], activation="relu", weight_init="XavierNormal", sizes=None)
    return Hypernetwork.build(spec, sizes=sizes, seed=0, name=name)


@pytest.fixture(scope="module")
def sdxl_model():
    return HeadlessModel(tiny_sdxl.build_tiny_sdxl_components())


def test_apply_patches_every_sdxl_width(sdxl_model):
    network = _network(sdxl_model.attention_widths())
    assert sorted(network.sizes) == [640, 1280, 2048]
    seen = set()
    for module in network.modules():
        module.register_forward_hook(lambda module, args, out: seen.add(module.dim))
    generator = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 4, 4, 4, generator=generator), torch.tensor([500])
    context, pooled = torch.randn(1, 77, 2048, generator=generator), torch.randn(1, 1280, generator=generator)
    with torch.inference_mode():
        plain = sdxl_model.apply_model(x, t, context, pooled=pooled)
        patched = apply_hypernetwork(sdxl_model, network, 1.0).apply_model(x, t, context, pooled=pooled)
        unchanged = apply_hypernetwork(sdxl_model, network, 0.0).apply_model(x, t, context, pooled=pooled)
    assert seen == {640, 1280, 2048}
    assert not torch.allclose(patched, plain, atol=1e-4) and torch.equal(unchanged, plain)


def test_an_sd1_file_on_sdxl_says_which_widths_apply():
    message = check_widths(_network(FAMILY_SIZES["SD1"], "sd1"), FAMILY_SIZES["SDXL"])
    assert "only [640, 1280] apply" in message
    assert "[320, 768] never apply" in message and "attention at [2048] stays unchanged" in message
    message = check_widths(_network(FAMILY_SIZES["SDXL"], "xl"), FAMILY_SIZES["SD1"])
    assert "[2048] never apply" in message and "attention at [320, 768] stays unchanged" in message


def test_the_tiny_families_match_no_width_in_either_direction(sdxl_model, caplog):
    sd_model = HeadlessModel(build_tiny_components())
    for model, network in ((sdxl_model, _network(sd_model.attention_widths(), "tiny-sd file")),
                           (sd_model, _network(sdxl_model.attention_widths(), "tiny-sdxl file"))):
        caplog.clear()
        with caplog.at_level("WARNING"):
            apply_hypernetwork(model, network, 1.0)
        assert f"hypernetwork '{network.name}'" in caplog.text
        assert "none match, so applying it changes nothing" in caplog.text


def test_the_apply_node_shows_the_warning(sdxl_model):
    from hypernet_studio.nodes.model import ApplyHypernetNode
    from hypernet_studio.runtime.headless_host import HEADLESS

    events = []
    saved = HEADLESS.event_sink
    HEADLESS.event_sink = lambda event, data: events.append((event, data))
    try:
        ApplyHypernetNode().apply(sdxl_model, _network(FAMILY_SIZES["SD1"], "sd1"), 1.0)
    finally:
        HEADLESS.event_sink = saved
    texts = [data["text"] for event, data in events if event == "progress_text"]
    assert len(texts) == 1 and "[320, 768] never apply" in texts[0]
