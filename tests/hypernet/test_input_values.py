"""The one choice check and the one-item-list unwrap that the library and the nodes share."""
import pytest

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.input_values import check_choice, single_value


def test_a_known_choice_passes_and_an_unknown_one_names_the_input_and_the_choices():
    check_choice("mode", "norm", ("disabled", "value", "norm"))
    with pytest.raises(InputError) as caught:
        check_choice("mode", "nrom", ("disabled", "value", "norm"))
    assert caught.value.input_name == "mode"
    assert str(caught.value) == "input 'mode': 'nrom' is not one of disabled, value, norm"


def test_choices_may_be_any_iterable_of_any_values():
    check_choice("size", 2, iter([1, 2]))
    check_choice("precision", "bf16", {"fp32": None, "bf16": "dtype"})
    with pytest.raises(InputError, match=r"input 'size': 3 is not one of 1, 2$"):
        check_choice("size", 3, (n for n in (1, 2)))
    with pytest.raises(InputError, match="None is not one of a"):
        check_choice("letter", None, ["a"])


def test_only_a_one_item_list_is_unwrapped():
    assert single_value(["only"]) == "only"
    assert single_value([["nested"]]) == ["nested"]
    assert single_value([1, 2]) == [1, 2]
    assert single_value([]) == []
    assert single_value(("tuple",)) == ("tuple",)
    assert single_value(None) is None
