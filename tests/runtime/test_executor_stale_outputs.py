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


class LoadChunk:
    """A chunked load: chunk `chunk` of 3, its payload, and ui "chunk" as Load Images reports it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"chunk": ("INT", {"default": 0, "min": 0, "max": 10})}}

    RETURN_TYPES = ("PAYLOAD",)
    FUNCTION = "load"

    def load(self, chunk):
        (payload,) = MakePayload().make(chunk)
        return {"ui": {"chunk": [chunk, 3]}, "result": (payload,)}


def test_run_all_chunks_runs_each_chunk_once_holding_one_at_a_time(monkeypatch, tmp_path, capsys):
    import json

    from hypernet_studio.runtime import cli
    from hypernet_studio.runtime.headless_host import HEADLESS

    saved = {key: getattr(HEADLESS, key) for key in ("base_dir", "input_dir", "output_dir", "models_dir", "device")}
    monkeypatch.setattr(cli, "_registry", lambda: {"LoadChunk": LoadChunk, "Consume": Consume})
    workflow = tmp_path / "chunks.json"
    workflow.write_text(json.dumps({"1": {"class_type": "LoadChunk", "inputs": {"chunk": 1}},
                                    "2": {"class_type": "Consume", "inputs": {"payload": ["1", 0]}}}))
    MakePayload.made = []
    try:
        assert cli.main(["run", str(workflow), "--all-chunks", "--base-dir", str(tmp_path)]) == cli.EXIT_OK
    finally:
        for key, value in saved.items():
            setattr(HEADLESS, key, value)
    # from the workflow's chunk on, as a queue in the editor goes; the last chunk ends the runs
    assert [(chunk, alive) for chunk, alive, _ in MakePayload.made] == [(1, False), (2, False)]
    assert "#1 LoadChunk: chunk 3 of 3 done" in capsys.readouterr().err
