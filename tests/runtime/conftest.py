"""Fake node classes for the runtime tests: tiny, recording every call, no other engineer's nodes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
CALLS: list[tuple[str, dict]] = []


def _record(name: str, **kwargs) -> None:
    CALLS.append((name, kwargs))


class Const:
    """An INT source with a seed widget (so the editor saves a control value after it)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "make"

    def make(self, value, seed):
        _record("Const", value=value, seed=seed)
        return (value,)


class Add:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"forceInput": True}), "b": ("INT", {"default": 1, "min": -100, "max": 100})},
                "optional": {"c": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "add"

    def add(self, a, b, c=0):
        _record("Add", a=a, b=b, c=c)
        return (a + b + c,)


class Pair:
    """Two INT inputs and two INT outputs: for bypass 'same slot first'."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"first": ("INT", {"forceInput": True}), "second": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT", "INT")
    FUNCTION = "swap"

    def swap(self, first, second):
        return (second, first)


class Label:
    """A STRING-and-INT node whose output is INT: bypass must pick the INT input."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True}), "number": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "label"

    def label(self, text, number):
        return (number * 1000,)


class Text:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "", "multiline": True}),
                             "mode": (["plain", "upper"], {"default": "plain"})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "make"

    def make(self, text, mode):
        _record("Text", text=text, mode=mode)
        return (text.upper() if mode == "upper" else text,)


class Tags:
    """A multi-select combo: the editor saves its value as an array."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tags": ("COMBO", {"options": ["a", "b", "c"], "multi_select": True})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "join"

    def join(self, tags):
        return (",".join(tags),)


class Sampler:
    """Widgets: seed (+control), steps, sampler combo, denoise; plus a hidden UNIQUE_ID."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**64 - 1}),
                             "steps": ("INT", {"default": 20, "min": 1, "max": 100}),
                             "sampler_name": (["euler", "heun", "ddim"],),
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "sample"

    def sample(self, value, seed, steps, sampler_name, denoise):
        _record("Sampler", value=value, seed=seed, steps=steps, sampler_name=sampler_name, denoise=denoise)
        return (value + seed + steps,)


class Pick:
    """A combo with the `control_after_generate` option and an `image_upload` combo."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (["a.png", "b.png"], {"image_upload": True}),
                             "variant": ("INT", {"default": 0, "control_after_generate": True}),
                             "note": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "pick"

    def pick(self, image, variant, note):
        return (f"{image}:{variant}:{note}",)


class Collect:
    """Output node: reports what it got in `ui`, and records inference mode and hidden inputs."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {})},
                "optional": {"tag": ("STRING", {"default": ""})},
                "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ()
    FUNCTION = "collect"
    OUTPUT_NODE = True

    def collect(self, value, unique_id, prompt, extra_pnginfo, tag=""):
        _record("Collect", value=value, unique_id=unique_id, prompt=prompt, extra_pnginfo=extra_pnginfo,
                tag=tag, inference_mode=torch.is_inference_mode_enabled(), instance=id(self))
        return {"ui": {"values": [value]}}


class MakeModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "make"

    def make(self):
        return ("model",)


class UseImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE,MASK",)}}

    RETURN_TYPES = ()
    FUNCTION = "use"
    OUTPUT_NODE = True

    def use(self, image):
        return {"ui": {"images": []}}


class Gated:
    """VALIDATE_INPUTS names only `size`: so it must receive only `size`, and `size` skips min/max."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"size": ("INT", {"default": 8, "min": 1, "max": 64}),
                             "name": ("STRING", {"default": "x"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, size):
        _record("Gated.VALIDATE_INPUTS", size=size)
        return True if size % 8 == 0 else f"size must be a multiple of 8, got {size}"

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, size, name):
        return (size,)


class Range:
    """OUTPUT_IS_LIST: one call makes a list of `count` items."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 0, "max": 10})}}

    RETURN_TYPES = ("INT", "INT")
    OUTPUT_IS_LIST = (True, False)
    FUNCTION = "make"

    def make(self, count):
        _record("Range", count=count)
        return (list(range(count)), count)


class Sum:
    """INPUT_IS_LIST: one call with whole lists (widgets as one-item lists)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT", {"forceInput": True}), "scale": ("INT", {"default": 1})}}

    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "total"

    def total(self, values, scale):
        _record("Sum", values=list(values), scale=list(scale))
        return (sum(values) * scale[0],)


class Volatile:
    """IS_CHANGED returns NaN: always reruns."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    @classmethod
    def IS_CHANGED(cls, value):
        return float("nan")

    RETURN_TYPES = ("INT",)
    FUNCTION = "make"

    def make(self, value):
        _record("Volatile", value=value)
        return (value,)


class FileStamp:
    """IS_CHANGED returns a value the test controls (like a file's mtime)."""

    stamp = "v1"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    @classmethod
    def IS_CHANGED(cls, value):
        return cls.stamp

    RETURN_TYPES = ("INT",)
    FUNCTION = "make"

    def make(self, value):
        _record("FileStamp", value=value)
        return (value,)


class Interrupter:
    """Sets the interrupt flag, then reports progress (which must raise)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        from hypernet_studio.nodes.host import HOST
        from hypernet_studio.runtime.headless_host import HEADLESS

        _record("Interrupter", value=value)
        bar = HOST.progress_bar(10)
        bar.update(1)
        HEADLESS.interrupt.set()
        bar.update(1)
        _record("Interrupter.after", value=value)
        return (value,)


class Terminated:
    """Sends its own process SIGTERM (as torchrun does to stop its processes), then reports
    progress (which must raise: SIGTERM asks for a stop like Ctrl-C)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        import os
        import signal

        from hypernet_studio.nodes.host import HOST

        os.kill(os.getpid(), signal.SIGTERM)
        HOST.progress_bar(10).update(1)
        _record("Terminated.after", value=value)
        return (value,)


class Progress:
    """Reports progress and a custom event."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        from hypernet_studio.nodes.host import HOST

        bar = HOST.progress_bar(3)
        for _ in range(3):
            bar.update(1)
        HOST.send_event("hypernet.test", {"value": value})
        return (value,)


class Fail:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        raise ValueError(f"cannot handle {value}")


FAKE_NODES = {cls.__name__: cls for cls in (
    Const, Add, Pair, Label, Text, Tags, Sampler, Pick, Collect, MakeModel, UseImage, Gated, Range, Sum, Volatile,
    FileStamp, Interrupter, Terminated, Progress, Fail)}


@pytest.fixture
def registry():
    """The fake node registry; also clears the call log."""
    CALLS.clear()
    FileStamp.stamp = "v1"
    return dict(FAKE_NODES)


@pytest.fixture
def calls():
    """The call log: (node name, kwargs) tuples in call order."""
    return CALLS


@pytest.fixture
def load_fixture():
    def load(name: str):
        return json.loads((FIXTURES / name).read_text())
    return load
