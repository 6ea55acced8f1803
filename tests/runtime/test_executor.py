"""Executor semantics: ancestors-only, order, lists, caching, hidden inputs, events, interrupt."""
import pytest

from hypernet_studio.runtime.executor import DependencyCycleError, Executor, NodeExecutionError, execution_order
from hypernet_studio.runtime.headless_host import HEADLESS, InterruptedByUser


def _names(calls):
    return [name for name, _ in calls]


def _chain(value=1, b=10, tag=""):
    """Const(1) -> Add(2) -> Collect(3), plus an independent Const(4) -> Collect(5)."""
    return {"1": {"class_type": "Const", "inputs": {"value": value, "seed": 0}},
            "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": b}},
            "3": {"class_type": "Collect", "inputs": {"value": ["2", 0], "tag": tag}},
            "4": {"class_type": "Const", "inputs": {"value": 50, "seed": 0}},
            "5": {"class_type": "Collect", "inputs": {"value": ["4", 0]}}}


def test_runs_ancestors_of_outputs_only_in_dependency_order(registry, calls):
    prompt = _chain()
    prompt["9"] = {"class_type": "Const", "inputs": {"value": 3, "seed": 0}}  # not an ancestor of any output
    result = Executor(registry).run(prompt)
    assert result.order == ["1", "2", "3", "4", "5"]
    assert result.executed == result.order
    assert result.ui == {"3": {"values": [11]}, "5": {"values": [50]}}
    assert [c for c in calls if c[0] == "Const"] == [("Const", {"value": 1, "seed": 0}),
                                                     ("Const", {"value": 50, "seed": 0})]


def test_changing_one_widget_reruns_only_its_descendants(registry, calls):
    executor = Executor(registry)
    executor.run(_chain())
    calls.clear()

    second = executor.run(_chain(b=20))
    assert sorted(second.cached) == ["1", "4", "5"] and second.executed == ["2", "3"]
    assert _names(calls) == ["Add", "Collect"]
    assert second.ui["3"] == {"values": [21]} and second.ui["5"] == {"values": [50]}  # cached ui still returned

    calls.clear()
    third = executor.run(_chain(b=20))
    assert calls == [] and third.executed == [] and third.ui["3"] == {"values": [21]}

    calls.clear()
    executor.run(_chain(value=2, b=20))  # the root changes: everything downstream of it reruns
    assert _names(calls) == ["Const", "Add", "Collect"]


def test_is_changed_nan_always_reruns_and_value_changes_bust_cache(registry, calls):
    prompt = {"1": {"class_type": "Volatile", "inputs": {"value": 1}},
              "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "FileStamp", "inputs": {"value": 2}},
              "4": {"class_type": "Collect", "inputs": {"value": ["3", 0]}}}
    executor = Executor(registry)
    executor.run(prompt)
    calls.clear()
    executor.run(prompt)
    assert _names(calls) == ["Volatile", "Collect"]  # NaN: it and its descendant rerun; FileStamp cached
    calls.clear()
    registry["FileStamp"].stamp = "v2"
    executor.run(prompt)
    assert "FileStamp" in _names(calls)


def test_instances_are_reused_per_node_and_class(registry, calls):
    executor = Executor(registry)
    executor.run(_chain())
    executor.run(_chain(tag="again"))
    instances = [kwargs["instance"] for name, kwargs in calls if name == "Collect" and kwargs["unique_id"] == "3"]
    assert len(instances) == 2 and instances[0] == instances[1]


def test_hidden_inputs_and_inference_mode(registry, calls):
    prompt = _chain()
    Executor(registry).run(prompt, extra_pnginfo={"workflow": {"nodes": []}})
    collected = [kwargs for name, kwargs in calls if name == "Collect"]
    assert [k["unique_id"] for k in collected] == ["3", "5"]
    assert collected[0]["prompt"]["2"]["inputs"]["b"] == 10
    assert collected[0]["extra_pnginfo"] == {"workflow": {"nodes": []}}
    assert all(k["inference_mode"] for k in collected)


def test_output_is_list_then_broadcast_then_input_is_list(registry, calls):
    prompt = {"1": {"class_type": "Range", "inputs": {"count": 3}},
              # a: list [0, 1, 2]; c: list [3] (plain output) -> broadcast, last item repeats
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 10, "c": ["1", 1]}},
              "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "Sum", "inputs": {"values": ["2", 0], "scale": 2}},
              "5": {"class_type": "Collect", "inputs": {"value": ["4", 0]}}}
    result = Executor(registry).run(prompt)
    assert [kwargs for name, kwargs in calls if name == "Add"] == [
        {"a": 0, "b": 10, "c": 3}, {"a": 1, "b": 10, "c": 3}, {"a": 2, "b": 10, "c": 3}]
    assert result.ui["3"] == {"values": [13, 14, 15]}  # one Collect call per item, ui merged
    assert [kwargs for name, kwargs in calls if name == "Sum"] == [{"values": [13, 14, 15], "scale": [2]}]
    assert result.ui["5"] == {"values": [84]}
    assert result.outputs["1"] == [[0, 1, 2], [3]]


def test_empty_list_input_is_a_clear_error(registry):
    prompt = {"1": {"class_type": "Range", "inputs": {"count": 0}},
              "2": {"class_type": "Collect", "inputs": {"value": ["1", 0]}}}
    with pytest.raises(NodeExecutionError, match="input 'value' received an empty list"):
        Executor(registry).run(prompt)


def test_cycle_detection(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": ["3", 0], "b": 1}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
              "4": {"class_type": "Collect", "inputs": {"value": ["3", 0]}}}
    with pytest.raises(DependencyCycleError) as info:
        execution_order(prompt, ["4"])
    assert sorted(info.value.nodes) == ["1", "2", "3"]


def test_node_error_names_node_and_keeps_successful_outputs_cached(registry, calls):
    prompt = _chain()
    prompt["6"] = {"class_type": "Fail", "inputs": {"value": ["1", 0]}}
    prompt["7"] = {"class_type": "Collect", "inputs": {"value": ["6", 0]}}
    events = []
    executor = Executor(registry, event_callback=lambda name, data: events.append((name, data)))
    with pytest.raises(NodeExecutionError) as info:
        executor.run(prompt)
    assert (info.value.node_id, info.value.class_type) == ("6", "Fail")
    assert "node 6 (Fail) failed: ValueError: cannot handle 1" in str(info.value)
    error = next(data for name, data in events if name == "execution_error")
    assert error["node_id"] == "6" and error["exception_message"] == "cannot handle 1"
    assert "7" not in _names_of_executing(events)
    calls.clear()
    del prompt["6"], prompt["7"]
    assert executor.run(prompt).executed == []  # what ran before the failure is reused


def _names_of_executing(events):
    return [data["node"] for name, data in events if name == "executing"]


def test_interrupt_mid_node_stops_the_run(registry, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1, "seed": 0}},
              "2": {"class_type": "Interrupter", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}}}
    events = []
    executor = Executor(registry, event_callback=lambda name, data: events.append((name, data)))
    with pytest.raises(InterruptedByUser):
        executor.run(prompt)
    assert _names(calls) == ["Const", "Interrupter"]  # neither the rest of the node nor node 3 ran
    interrupted = next(data for name, data in events if name == "execution_interrupted")
    assert interrupted["node_id"] == "2" and interrupted["executed"] == ["1"]
    assert not HEADLESS.interrupt.is_set()  # consumed by the raise
    assert HEADLESS.progress_factory is None and HEADLESS.event_sink is None


def test_events_progress_and_custom_events(registry):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 4, "seed": 0}},
              "2": {"class_type": "Progress", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}}}
    events = []
    Executor(registry, event_callback=lambda name, data: events.append((name, data))).run(prompt)
    names = [name for name, _ in events]
    assert names[0] == "execution_start" and names[1] == "execution_cached" and names[-1] == "execution_success"
    progress = [(d["value"], d["max"], d["node"]) for n, d in events if n == "progress"]
    assert progress == [(1, 3, "2"), (2, 3, "2"), (3, 3, "2")]
    assert ("hypernet.test", {"value": 4}) in events
    assert _names_of_executing(events) == ["1", "2", "3", None]
    executed = [d for n, d in events if n == "executed"]
    assert executed == [{"node": "3", "display_node": "3", "output": {"values": [4]},
                         "prompt_id": executed[0]["prompt_id"]}]


def test_ui_files_resolve_against_headless_folders(registry, headless_dirs):
    class Saver:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        RETURN_TYPES = ()
        FUNCTION = "save"
        OUTPUT_NODE = True

        def save(self):
            return {"ui": {"images": [{"filename": "a.png", "subfolder": "run1", "type": "output"},
                                      {"filename": "b.png", "subfolder": "", "type": "temp"}]}}

    registry["Saver"] = Saver
    result = Executor(registry).run({"1": {"class_type": "Saver", "inputs": {}}})
    assert result.files == [headless_dirs / "output" / "run1" / "a.png", headless_dirs / "temp" / "b.png"]


def test_long_chain_runs_without_recursion_limits(registry, calls):
    length = 3000  # deeper than Python's default recursion limit
    prompt = {"0": {"class_type": "Const", "inputs": {"value": 0, "seed": 0}}}
    for i in range(1, length + 1):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt["out"] = {"class_type": "Collect", "inputs": {"value": [str(length), 0]}}
    executor = Executor(registry)
    assert executor.run(prompt).ui["out"] == {"values": [length]}
    prompt[str(length)]["inputs"]["b"] = 2
    second = executor.run(prompt)
    assert second.executed == [str(length), "out"] and second.ui["out"] == {"values": [length + 1]}
