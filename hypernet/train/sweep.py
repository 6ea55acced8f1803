"""A spec sweep: several networks trained one after the other on one picture set, each under a
name of its own that says its spec (NAME-1_2_1-swish), so a grid can compare them.

The names are a pure function of the base name and the list of specs: the same sweep queued
again asks for the same names (and the run files' numbering, NAME-1_2_1-swish_00001, keeps the
earlier results). A single spec keeps the base name as it is."""
from __future__ import annotations

from typing import Sequence

from ..errors import InputError
from ..spec import HypernetSpec
from .config import validate_name

# A sweep trains one whole network per spec, one after the other, in one queue item: past this
# many, a sweep is better queued as several (each one's results land when it ends).
MAX_SWEEP_SPECS = 16


def _numbers(values: Sequence[float], separator: str) -> str:
    return separator.join(f"{value:g}" for value in values)


def short_spec(spec: HypernetSpec) -> str:
    """The spec in a few words, as the run summary and a comparison table show it:
    '1,2,1 swish', with ' ln' for layer norm and ' dropout 0,0.1,0' when dropout is used."""
    text = f"{_numbers(spec.layer_structure, ',')} {spec.activation}"
    if spec.layer_norm:
        text += " ln"
    if spec.use_dropout:
        text += f" dropout {_numbers(spec.validated_dropout_structure, ',')}"
    return text


def spec_suffix(spec: HypernetSpec) -> str:
    """The spec as a name ending: '1_2_1-swish', '-ln' and '-drop0_0.1_0' when used."""
    text = f"{_numbers(spec.layer_structure, '_')}-{spec.activation}"
    if spec.layer_norm:
        text += "-ln"
    if spec.use_dropout:
        text += f"-drop{_numbers(spec.validated_dropout_structure, '_')}"
    return text


def sweep_names(name: str, specs: Sequence[HypernetSpec]) -> list[str]:
    """One run name per spec: `name` itself for a single spec, else NAME-<spec suffix>; a suffix
    that repeats (specs that differ only in what the suffix leaves out, such as the weight
    initialisation) gets -2, -3 in list order. Every name is checked as a network name."""
    if len(specs) > MAX_SWEEP_SPECS:
        raise InputError("hypernet_spec", f"got {len(specs)} specs; a sweep trains at most {MAX_SWEEP_SPECS} "
                                          "networks in one queue: split it into several sweeps")
    if len(specs) <= 1:
        return [validate_name(name)]
    names: list[str] = []
    for spec in specs:
        candidate = f"{name}-{spec_suffix(spec)}"
        repeat = 1
        while (f"{candidate}-{repeat}" if repeat > 1 else candidate) in names:
            repeat += 1
        candidate = f"{candidate}-{repeat}" if repeat > 1 else candidate
        try:
            names.append(validate_name(candidate))
        except InputError as exc:
            raise InputError("name", f"the sweep's run name {candidate!r} is not usable ({exc.message}); "
                                     "choose a shorter name") from None
    return names
