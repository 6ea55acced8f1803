"""Deepbooru resnet_custom_v3: the 179 convolutions against the spec, a real forward, file loading."""
import datetime
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from hypernet_studio.hypernet.taggers import deepbooru
from hypernet_studio.hypernet.taggers.deepbooru import DeepDanbooruNet, load_deepbooru, read_deepbooru_file
from hypernet_studio.hypernet.taggers.deepbooru_post import TagOptions

from .deepbooru_weights import forget_cached_model, random_state_dict


def _spec_convolutions(num_tags):
    """(in, out, kernel, stride, bias) for n_Conv_0..178, written from docs/preprocessing.md:
    stem 7x7/2; stages 3/8/40/3/3 bottlenecks (1x1, 3x3, 1x1) with a 1x1 projection numbered
    first at each stage entry; stage 3 downsamples again at block 21, whose projection
    (n_Conv_100) follows its main path; head 1x1 without bias."""
    convs = [(3, 64, 7, 2, True)]
    stages = [(64, 256, 3, 1), (128, 512, 8, 2), (256, 1024, 40, 2), (512, 2048, 3, 2), (1024, 4096, 3, 2)]
    channels = 64
    for width, out, blocks, stride in stages:
        for block in range(1, blocks + 1):
            entry, mid = block == 1, (width == 256 and block == 21)
            s = stride if entry else (2 if mid else 1)
            if entry:
                convs.append((channels, out, 1, s, True))
            convs += [(channels, width, 1, 1, True), (width, width, 3, s, True), (width, out, 1, 1, True)]
            if mid:
                convs.append((channels, out, 1, 2, True))
            channels = out
    convs.append((4096, num_tags, 1, 1, False))
    return convs


def _spec_forward(state, images_nhwc):
    """resnet_custom_v3's forward written from docs/preprocessing.md, convs taken in index order:
    stem 7x7/2 padded [2,3,2,3] + ReLU, 3x3/2 max-pool padded right/bottom with -inf; per block
    1x1 -> ReLU -> 3x3 (strided ones pad [0,1,0,1], others 1) -> ReLU -> 1x1, add, ReLU; head
    1x1 without bias, global average pool, sigmoid."""
    import torch.nn.functional as F

    index = 0

    def conv(x, stride=1, pad=None):
        nonlocal index
        weight, bias = state[f"n_Conv_{index}.weight"], state.get(f"n_Conv_{index}.bias")
        index += 1
        return F.conv2d(F.pad(x, pad) if pad else x, weight, bias, stride)

    x = F.relu(conv(images_nhwc.permute(0, 3, 1, 2), 2, [2, 3, 2, 3]))
    x = F.max_pool2d(F.pad(x, [0, 1, 0, 1], value=float("-inf")), 3, 2)
    for blocks, stage_stride in [(3, 1), (8, 2), (40, 2), (3, 2), (3, 2)]:
        for block in range(1, blocks + 1):
            entry, mid = block == 1, blocks == 40 and block == 21
            stride = stage_stride if entry else (2 if mid else 1)
            shortcut = conv(x, stride) if entry else x
            y = F.relu(conv(x))
            y = F.relu(conv(y, stride, [0, 1, 0, 1] if stride == 2 else [1, 1, 1, 1]))
            y = conv(y)
            if mid:
                shortcut = conv(x, 2)
            x = F.relu(y + shortcut)
    assert index == 178
    return torch.sigmoid(conv(x).mean(dim=(2, 3)))


def test_all_179_convolutions_match_the_spec():
    with torch.device("meta"):
        net = DeepDanbooruNet()
    expected = _spec_convolutions(9176)
    assert len(expected) == 179
    convs = {name: module for name, module in net.named_modules() if isinstance(module, torch.nn.Conv2d)}
    assert sorted(convs, key=lambda n: int(n.split("_")[-1])) == [f"n_Conv_{i}" for i in range(179)]
    for index, (c_in, c_out, kernel, stride, bias) in enumerate(expected):
        conv = convs[f"n_Conv_{index}"]
        assert tuple(conv.weight.shape) == (c_out, c_in, kernel, kernel), index
        assert conv.stride == (stride, stride), index
        assert (conv.bias is not None) == bias, index
    assert convs["n_Conv_100"].stride == (2, 2) and convs["n_Conv_100"].kernel_size == (1, 1)
    state_keys = set(net.state_dict())
    assert state_keys == {f"n_Conv_{i}.weight" for i in range(179)} | {f"n_Conv_{i}.bias" for i in range(178)}
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(161.0e6, rel=1e-3)


def test_forward_on_a_small_input_gives_probabilities_per_tag_as_the_spec_math():
    tensors = {k: v for k, v in random_state_dict(num_tags=3, seed=1).items() if k != "tags"}
    net = deepbooru.build_deepbooru_net(dict(tensors))
    images = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, reference = net(images), _spec_forward(tensors, images)
    assert out.shape == (1, 3)
    assert torch.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()
    assert out.std() > 0.05  # not a constant: the input reached the head
    torch.testing.assert_close(torch.logit(out.double()), torch.logit(reference.double()), rtol=1e-4, atol=1e-4)


def test_file_loads_with_tags_is_cached_and_reloads_when_replaced(tmp_path):
    path = tmp_path / "model-resnet_custom_v3.pt"
    torch.save(random_state_dict(num_tags=3, tags=["a", "b", "c"]), path)
    forget_cached_model()
    model = load_deepbooru(path)
    assert model.tags == ["a", "b", "c"] and model.net.num_tags == 3
    assert load_deepbooru(path) is model
    torch.save(random_state_dict(num_tags=2, tags=["x", "y"]), path)
    reloaded = load_deepbooru(path)
    assert reloaded is not model and reloaded.tags == ["x", "y"]
    forget_cached_model()


def test_tagging_pipeline_formats_each_image(monkeypatch, tmp_path):
    path = tmp_path / "m.pt"
    torch.save(random_state_dict(num_tags=3, tags=["b_tag", "a_tag", "rating:safe"]), path)
    model = load_deepbooru(path)
    monkeypatch.setattr(model, "probabilities",
                        lambda images, *a, **k: np.array([[0.9, 0.6, 0.99], [0.1, 0.7, 0.2]])[:len(images)])
    images = [Image.new("RGB", (10, 20)), Image.new("RGB", (30, 5))]
    assert deepbooru.tag_images(model, images, TagOptions()) == ["a tag, b tag", "a tag"]
    forget_cached_model()


def test_input_is_fitted_with_edge_fill_to_the_model_size():
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 200, 10))  # blue top band: its edge row is replicated into the bar
    array = deepbooru.prepare_deepbooru_input(image, 128)
    assert array.shape == (128, 128, 3) and array.dtype == np.float32
    assert array[0, 64].tolist() == pytest.approx([0, 0, 1], abs=0.05)
    assert array[64, 64].tolist() == pytest.approx([1, 0, 0], abs=0.05)


def test_bad_files_give_clear_errors(tmp_path):
    missing = tmp_path / "deepbooru" / "model-resnet_custom_v3.pt"
    with pytest.raises(FileNotFoundError) as info:
        load_deepbooru(missing)
    message = str(info.value)
    assert "model-resnet_custom_v3.pt" in message and str(missing.parent) in message
    assert deepbooru.DEEPBOORU_URL in message

    evil = tmp_path / "evil.pt"  # any non-tensor object: refused by weights_only
    evil.write_bytes(pickle.dumps({"n_Conv_178.weight": datetime.date(2020, 1, 1)}, protocol=2))
    with pytest.raises(ValueError, match="refused to read a Deepbooru model.*datetime.date"):
        load_deepbooru(evil)

    wrong = tmp_path / "wrong.pt"
    torch.save({"n_Conv_178.weight": torch.zeros(3, 4096, 1, 1), "tags": ["a", "b", "c"]}, wrong)
    with pytest.raises(ValueError, match="does not match"):
        load_deepbooru(wrong)

    mismatched = tmp_path / "tags.pt"
    torch.save(random_state_dict(num_tags=3, tags=["only", "two"]), mismatched)
    with pytest.raises(ValueError, match="2 tags for 3 outputs"):
        load_deepbooru(mismatched)


def test_safetensors_tags_come_from_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "db.safetensors"
    save_file({"n_Conv_178.weight": torch.zeros(2, 4096, 1, 1)}, str(path), metadata={"tags": '["a", "b"]'})
    tensors, tags = read_deepbooru_file(path)
    assert tags == ["a", "b"] and tensors["n_Conv_178.weight"].shape == (2, 4096, 1, 1)
