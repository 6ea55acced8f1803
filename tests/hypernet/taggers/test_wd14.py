"""WD14 tagging: pysssss' post-processing rules and a real onnxruntime session on a tiny model.

The tiny ONNX file is encoded by hand (the `onnx` package is not a dependency): it averages
the input per channel and maps it through a fixed linear layer and a sigmoid, so the
expected scores are computable from the spec's preprocessing (white pad, 0..255, BGR)."""

import numpy as np
import pytest
from PIL import Image

from hypernet_studio.hypernet.taggers import wd14
from hypernet_studio.hypernet.taggers.wd14 import TagRow, WD14Options, format_wd14_tags, prepare_wd14_input

ROWS = [TagRow("general_safe", 9), TagRow("blue_thing", 0), TagRow("some_character", 4),
        TagRow("faint_(tag)", 0), TagRow("other_char", 4)]


def test_characters_first_then_general_in_table_order_with_strict_thresholds():
    probabilities = np.array([0.99, 0.36, 0.9, 0.35, 0.85])
    assert format_wd14_tags(probabilities, ROWS, WD14Options()) == "some_character, blue_thing"
    options = WD14Options(threshold=0.3, replace_underscore=True, exclude_tags="Some Character")
    assert format_wd14_tags(probabilities, ROWS, options) == "blue thing, faint \\(tag\\)"
    assert format_wd14_tags(probabilities, ROWS, WD14Options(trailing_comma=True)) == "some_character, blue_thing, "


def test_preprocessing_pads_white_and_flips_to_bgr():
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    array = prepare_wd14_input(image, 8)
    assert array.shape == (8, 8, 3) and array.dtype == np.float32
    assert array[0, 0].tolist() == [255.0, 255.0, 255.0]  # white bar
    assert array[4, 4].tolist() == [0.0, 0.0, 255.0]  # red in BGR order, 0..255


# --------------------------------------------------------------------------- a tiny ONNX model
def _varint(value):
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _field(number, payload):
    """Length-delimited protobuf field (strings, bytes, sub-messages)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number, value):
    return _varint(number << 3) + _varint(value)


def _tensor(name, array):
    dims = b"".join(_int_field(1, d) for d in array.shape)
    return dims + _int_field(2, 1) + _field(8, name) + _field(9, array.astype("<f4").tobytes())


def _value_info(name, dims):
    shape = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _int_field(1, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _int_field(1, 1) + _field(2, shape)))


def _node(op, inputs, outputs, attributes=b""):
    return b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op) + attributes


def _tiny_wd14_model(path, weights, bias, size=16):
    axes = _field(1, "axes") + b"".join(_int_field(8, a) for a in (1, 2)) + _int_field(20, 7)
    keepdims = _field(1, "keepdims") + _int_field(3, 0) + _int_field(20, 2)
    graph = (_field(1, _node("ReduceMean", ["input_1"], ["pooled"], _field(5, axes) + _field(5, keepdims)))
             + _field(1, _node("MatMul", ["pooled", "W"], ["logits0"]))
             + _field(1, _node("Add", ["logits0", "B"], ["logits"]))
             + _field(1, _node("Sigmoid", ["logits"], ["predictions"]))
             + _field(2, "tiny_wd14")
             + _field(5, _tensor("W", weights)) + _field(5, _tensor("B", bias))
             + _field(11, _value_info("input_1", ["batch", size, size, 3]))
             + _field(12, _value_info("predictions", ["batch", weights.shape[1]])))
    model = _int_field(1, 8) + _field(8, _field(1, "") + _int_field(2, 13)) + _field(7, graph)
    path.write_bytes(model)


def test_real_session_scores_follow_the_spec_preprocessing(tmp_path):
    pytest.importorskip("onnxruntime")
    # tag "blue_thing" fires on the mean of channel 0, which must be blue after the BGR flip.
    weights = np.zeros((3, 5), np.float32)
    weights[0, 1] = 0.2
    bias = np.array([10, -25.5, 10, -10, -10], np.float32)
    model_path = tmp_path / "tiny.onnx"
    _tiny_wd14_model(model_path, weights, bias)
    (tmp_path / "selected_tags.csv").write_text(
        "tag_id,name,category,count\n" + "".join(f"{i},{r.name},{r.category},1\n" for i, r in enumerate(ROWS)))
    wd14._cached.clear()
    model = wd14.load_wd14(model_path)
    assert model.input_size == 16 and wd14.load_wd14(model_path) is model
    blue, red = Image.new("RGB", (16, 16), (0, 0, 255)), Image.new("RGB", (16, 16), (255, 0, 0))
    scores = model.probabilities([blue, red], batch_size=2)
    assert scores[0, 1] == pytest.approx(1 / (1 + np.exp(-(0.2 * 255 - 25.5))), abs=1e-5)
    assert scores[1, 1] == pytest.approx(1 / (1 + np.exp(25.5)), abs=1e-6)
    assert wd14.tag_images_wd14(model, [blue, red], WD14Options()) == ["some_character, blue_thing", "some_character"]
    wd14._cached.clear()


def test_missing_files_explain_where_they_go(tmp_path):
    with pytest.raises(FileNotFoundError, match="wd14_tagger"):
        wd14.load_wd14(tmp_path / "model.onnx")
    with pytest.raises(FileNotFoundError, match="selected_tags.csv"):
        wd14.read_tag_table(tmp_path / "selected_tags.csv")
