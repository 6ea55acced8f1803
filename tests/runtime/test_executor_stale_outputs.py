"""A node re-run on new inputs (the next chunk of a big folder) never holds its old outputs and
its new ones at once: the executor drops stale outputs before anything runs, as ComfyUI does."""
import gc
import weakref

from hypernet_studio.runtime.executor import Executor


class Payload:
    """Stands in for a chunk's pictures."""


class MakePayload:
    made: list = []  # (value, was the previous payload still alive when this one was made)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 10})}}

    RETURN_TYPES = ("PAYLOAD",)
    FUNCTION = "make"

    def make(self, value):
        gc.collect()
        previous = MakePayload.made[-1][2] if MakePayload.made else None
        payload = Payload()
        MakePayload.made.append((value, previous is not None and previous() is not None, weakref.ref(payload)))
        return (payload,)


class Consume:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"payload": ("PAYLOAD", {})}}

    RETURN_TYPES = ()
    FUNCTION = "consume"
    OUTPUT_NODE = True

    def consume(self, payload):
        return {"ui": {"text": ["ok"]}}


def test_a_node_rerun_on_new_inputs_has_released_its_old_outputs():
    MakePayload.made = []
    executor = Executor({"MakePayload": MakePayload, "Consume": Consume})
    for value in (1, 2, 2):
        executor.run({"1": {"class_type": "MakePayload", "inputs": {"value": value}},
                      "2": {"class_type": "Consume", "inputs": {"payload": ["1", 0]}}})
    assert [(value, alive) for value, alive, _ in MakePayload.made] == [(1, False), (2, False)]  # 3rd run: cached
