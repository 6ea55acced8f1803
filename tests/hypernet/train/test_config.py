"""TrainConfig: the prompt templates follow the chosen set, explicit lines win, choices are checked."""
import pytest

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.train.config import TrainConfig, check_choices
from hypernet_studio.hypernet.train.templates import template_lines


def test_the_templates_are_the_lines_of_the_chosen_set_unless_given():
    assert TrainConfig(name="n").templates == template_lines("style_filewords")
    assert TrainConfig(name="n", prompt_template="subject").templates == template_lines("subject")
    custom = TrainConfig(name="n", prompt_template="custom", custom_template="a [name]\n\n [filewords] ")
    assert custom.templates == ["a [name]", "[filewords]"]
    given = TrainConfig(name="n", templates=["[filewords]"], prompt_template="custom", custom_template="")
    assert given.templates == ["[filewords]"], "given lines are used as they are; the set is not read"


def test_an_unusable_template_names_its_input():
    with pytest.raises(InputError) as caught:
        TrainConfig(name="n", prompt_template="custom", custom_template=" \n ")
    assert caught.value.input_name == "custom_template"
    with pytest.raises(InputError) as caught:
        TrainConfig(name="n", prompt_template="poem")
    assert caught.value.input_name == "prompt_template"


def test_a_choice_outside_its_options_names_the_field():
    check_choices(TrainConfig(name="n"))
    with pytest.raises(InputError, match=r"input 'precision': 'fp8' is not one of fp32, fp16, bf16$"):
        check_choices(TrainConfig(name="n", precision="fp8"))
    with pytest.raises(InputError, match=r"input 'loss_type': 'l3' is not one of mse, l1, huber, smooth_l1$"):
        check_choices(TrainConfig(name="n", loss_type="l3"))
