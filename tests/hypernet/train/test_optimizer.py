"""The optimizer: options parsed and checked against torch's, torch's defaults where none are given."""
import pytest
import torch

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.train.optimizer import make_optimizer, optimizer_options, parse_optimizer_args

from .test_run import _config


def test_optimizer_args_parse_and_name_a_bad_key():
    assert parse_optimizer_args("betas=0.9,0.99 eps=1e-8 amsgrad=true", "AdamW") == {
        "betas": (0.9, 0.99), "eps": 1e-8, "amsgrad": True}
    assert parse_optimizer_args("", "SGD") == {}
    with pytest.raises(InputError, match="'bettas' is not an option of torch.optim.AdamW") as caught:
        parse_optimizer_args("bettas=0.9,0.99", "AdamW")
    assert caught.value.input_name == "optimizer_args"
    with pytest.raises(InputError, match="key=value"):
        parse_optimizer_args("eps", "AdamW")
    with pytest.raises(InputError, match="numbers or true/false"):
        parse_optimizer_args("eps=tiny", "AdamW")


def test_defaults_are_torchs_and_options_reach_the_optimizer():
    parameters = [torch.nn.Parameter(torch.zeros(2))]
    default = make_optimizer("AdamW", parameters, 1e-3, optimizer_options(_config(optimizer="AdamW")))
    assert default.defaults["weight_decay"] == 0.01 and default.defaults["betas"] == (0.9, 0.999), "A1111's AdamW"
    tuned = make_optimizer("AdamW", parameters, 1e-3, optimizer_options(_config(
        optimizer="AdamW", weight_decay=0.05, optimizer_args="betas=0.9,0.99 eps=1e-6")))
    assert (tuned.defaults["weight_decay"], tuned.defaults["betas"], tuned.defaults["eps"]) == (0.05, (0.9, 0.99), 1e-6)
    adam = make_optimizer("Adam", parameters, 1e-3, optimizer_options(_config(optimizer="Adam")))
    assert adam.defaults["weight_decay"] == 0, "each optimizer keeps its own default"
