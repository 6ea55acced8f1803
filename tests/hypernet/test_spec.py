"""HypernetSpec parsing, validation and size arithmetic (numbers from docs/file-format.md)."""
import pytest
import torch

from hypernet_studio.hypernet import spec as hn_spec
from hypernet_studio.hypernet.spec import HypernetSpec, file_size_bytes, parameter_count

SD1 = [768, 320, 640, 1280]
MIB = 1024 * 1024


def test_layer_structure_parses_text_and_lists_and_requires_ones_at_the_ends():
    assert hn_spec.parse_layer_structure("1, 2, 1") == [1.0, 2.0, 1.0]
    assert hn_spec.parse_layer_structure([1, 1.5, 1]) == [1.0, 1.5, 1.0]
    for bad in ("2, 2, 1", "1, 2, 2", "1", "1, x, 1", "1, -2, 1"):
        with pytest.raises(ValueError):
            hn_spec.parse_layer_structure(bad)


def test_activation_set_follows_a1111_with_swish_as_hardswish_and_refusals_explained():
    assert hn_spec.activation_class("swish") is torch.nn.Hardswish
    assert hn_spec.activation_class("linear") is None
    assert hn_spec.activation_class("leakyrelu") is torch.nn.LeakyReLU
    assert hn_spec.activation_class("mish") is torch.nn.Mish
    assert hn_spec.activation_class("SiLU") is torch.nn.SiLU
    names = hn_spec.activation_names()
    assert names[:7] == ["linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid"]
    assert {"gelu", "softsign", "mish", "celu", "selu"} <= set(names)
    for refused, reason in (("threshold", "argument"), ("glu", "halves"), ("prelu", "weight"),
                            ("multiheadattention", "not an activation")):
        assert refused not in names
        with pytest.raises(ValueError, match=reason):
            HypernetSpec(activation=refused)
    with pytest.raises(ValueError, match="unknown activation"):
        HypernetSpec(activation="wobble")


def test_legacy_dropout_rule_matches_a1111():
    assert hn_spec.legacy_dropout_structure([1, 2, 1], False, True) == [0, 0, 0]
    assert hn_spec.legacy_dropout_structure([1, 2, 1], True, False) == [0, 0, 0]
    assert hn_spec.legacy_dropout_structure([1, 2, 1], True, True) == [0, 0.3, 0]
    assert hn_spec.legacy_dropout_structure([1, 2, 2, 1], True, False) == [0, 0.3, 0, 0]
    assert hn_spec.legacy_dropout_structure([1, 2, 2, 1], True, True) == [0, 0.3, 0.3, 0]


def test_dropout_structure_is_validated():
    spec = HypernetSpec(layer_structure="1, 2, 2, 1", dropout_structure=[0, 0.1, 0.2, 0])
    assert spec.use_dropout and spec.last_layer_dropout
    assert not HypernetSpec().use_dropout
    with pytest.raises(ValueError, match="needs 3 entries"):
        HypernetSpec(dropout_structure=[0, 0.1])
    with pytest.raises(ValueError, match="between 0 and 1"):
        HypernetSpec(dropout_structure=[0, 1.0, 0])
    with pytest.raises(ValueError, match="weight_init"):
        HypernetSpec(weight_init="Uniform")


def test_sizes_default_to_sd1_and_are_validated():
    assert HypernetSpec().sizes == SD1
    assert hn_spec.FAMILY_SIZES["SD2"] == [1024, 320, 640, 1280]
    assert HypernetSpec(sizes=None).sizes is None
    assert hn_spec.parse_sizes("32, 64") == [32, 64]
    for bad in ("", "0", "32, 32", "12.5"):
        with pytest.raises(ValueError):
            hn_spec.parse_sizes(bad)


def test_parameter_counts_and_sizes_match_the_a1111_arithmetic():
    sum_d2, sum_d = sum(d * d for d in SD1), sum(SD1)
    assert (sum_d2, sum_d) == (2_740_224, 3_008)
    p121 = parameter_count(HypernetSpec())
    assert p121 == 21_939_840 == 8 * sum_d2 + 6 * sum_d
    assert round(4 * p121 / MIB, 2) == 83.69
    p1221 = parameter_count(HypernetSpec(layer_structure="1, 2, 2, 1"))
    assert p1221 == 43_873_664 == 16 * sum_d2 + 10 * sum_d
    assert round(4 * p1221 / MIB, 2) == 167.36
    assert round(4 * parameter_count(HypernetSpec(layer_norm=True)) / MIB, 2) == 83.83
    # Ticking 1024 adds 32 MiB; fractional multipliers truncate widths like A1111's int(d*m).
    assert round(4 * parameter_count(HypernetSpec(), [1024]) / MIB) == 32
    d = 320
    assert parameter_count(HypernetSpec(layer_structure="1, 1.5, 1"), [d]) == 2 * (d * 480 + 480 + 480 * d + d)
    assert 0 < file_size_bytes(HypernetSpec()) - 4 * p121 < 64 * 1024
    with pytest.raises(ValueError):
        parameter_count(HypernetSpec(sizes=None))


def test_every_size_function_refuses_a_spec_without_sizes_by_name():
    # tensor_count used to fail with a bare TypeError (len(None)) instead of this message.
    spec = HypernetSpec(sizes=None)
    for function in (parameter_count, hn_spec.tensor_count, file_size_bytes, hn_spec.describe_size):
        with pytest.raises(ValueError, match=f"{function.__name__}: the spec takes its sizes from the model"):
            function(spec)
    assert hn_spec.tensor_count(spec, [320]) == 2 * 2 * 2  # k and v, two Linear layers, weight and bias



def test_validated_dropout_structure_is_the_filled_list_and_refuses_a_cleared_one():
    spec = HypernetSpec(layer_structure="1, 2, 1")
    assert spec.validated_dropout_structure == [0, 0, 0]
    spec.dropout_structure = None
    with pytest.raises(ValueError, match="set to None after construction"):
        spec.with_sizes([320])
