"""Run an API prompt headless, following ComfyUI's execution rules.

- Only output nodes and their ancestors run, ancestors first, in a deterministic order
  (under torchrun, processes other than rank 0 run only the training nodes and their ancestors).
- Every input is a list: a node runs once per item of its longest input (shorter lists
  repeat their last item) unless it sets INPUT_IS_LIST; OUTPUT_IS_LIST outputs are
  concatenated across those calls.
- Outputs are cached for the executor's life under a signature of the node's class,
  IS_CHANGED, constant inputs and ancestors' signatures, so a re-run recomputes only
  what changed. IS_CHANGED returning NaN (or raising) means "always rerun".
- The whole prompt runs under torch.inference_mode(), like ComfyUI.
- Progress, interrupt and node events reach the nodes through the headless host (runtime/headless_host.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import math
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import torch

from .. import install_host
from .headless_host import HEADLESS, InterruptedByUser
from .nodeinfo import node_inputs, output_is_list, return_types
from .progress import ProgressFactory
from .workflow import is_link, unwrap_value
from .workflow_checks import PromptValidationError, ValidationIssue, find_cycle, link_sources, validate_prompt

EventCallback = Callable[[str, dict], None]
# Each "always rerun" verdict gets a fresh number, so its signature never recurs.
_ALWAYS_RERUN = itertools.count()


class NodeExecutionError(RuntimeError):
    """A node raised while running; names the node and keeps the original exception."""

    def __init__(self, node_id: str, class_type: str, original: BaseException, formatted_traceback: str = ""):
        self.node_id, self.class_type, self.original = node_id, class_type, original
        self.traceback = formatted_traceback
        super().__init__(f"node {node_id} ({class_type}) failed: {type(original).__name__}: {original}")


class DependencyCycleError(ValueError):
    """The prompt's links form a cycle; `.nodes` lists the node ids on it."""

    def __init__(self, nodes: list[str]):
        self.nodes = nodes
        super().__init__("dependency cycle: " + " -> ".join(nodes + nodes[:1]))


@dataclass
class RunResult:
    """What one run produced. `ui` maps output node ids to their merged `ui` dicts (cached
    ones included); `files` are the files those `ui` entries name, resolved to paths."""

    prompt_id: str
    ui: dict[str, dict] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    outputs: dict[str, list[list]] = field(default_factory=dict)


@dataclass
class _CacheEntry:
    signature: Any
    outputs: list[list]
    ui: dict


class Executor:
    """Runs prompts against a registry {class_type: node class}; keep one to reuse its cache."""

    def __init__(self, registry: Optional[Mapping[str, type]] = None, event_callback: Optional[EventCallback] = None,
                 show_progress: bool = False):
        install_host()  # also for a registry given here: its nodes run against the host
        if registry is None:
            from .registry import build_registry

            registry = build_registry()[0]
        self.registry = dict(registry)
        self.event_callback = event_callback
        self.show_progress = show_progress
        self._cache: dict[str, _CacheEntry] = {}
        self._instances: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ public
    def validate(self, prompt: Mapping[str, Any]):
        """Validation only (see validation.validate_prompt)."""
        return validate_prompt(prompt, self.registry)

    def run(self, prompt: Mapping[str, Any], extra_pnginfo: Optional[dict] = None,
            prompt_id: Optional[str] = None) -> RunResult:
        """Validate and run `prompt`. Raises PromptValidationError, NodeExecutionError or
        InterruptedByUser (KeyboardInterrupt passes through unchanged)."""
        checked = validate_prompt(prompt, self.registry)
        if not checked.ok:
            raise PromptValidationError(checked.issues)
        prompt = checked.prompt
        order = execution_order(prompt, self._outputs_for_this_process(prompt, checked.outputs))
        result = RunResult(prompt_id or uuid.uuid4().hex, order=order)
        extra_pnginfo = extra_pnginfo if extra_pnginfo is not None else {}
        # Entries of nodes that left the prompt are dropped, like ComfyUI's cache.
        self._cache = {nid: entry for nid, entry in self._cache.items() if nid in prompt}
        self._instances = {key: obj for key, obj in self._instances.items()
                           if key[0] in prompt and prompt[key[0]]["class_type"] == key[1]}
        HEADLESS.interrupt.clear()  # a stale request must not stop the next prompt

        with self._host_hooks(prompt, result.prompt_id) as progress, torch.inference_mode():
            self._emit("execution_start", {"prompt_id": result.prompt_id, "timestamp": _now_ms()})
            signatures = self._signatures(prompt, order)
            # Outputs computed from other inputs are dropped before anything runs, as ComfyUI's
            # cache does (clean_unused): a node re-run on new inputs (the next chunk of a folder)
            # never holds its old outputs and its new ones at once.
            self._cache = {nid: entry for nid, entry in self._cache.items()
                           if nid not in signatures or entry.signature == signatures[nid]}
            result.cached = [nid for nid in order if nid in self._cache]
            self._emit("execution_cached", {"nodes": list(result.cached), "prompt_id": result.prompt_id})
            cached = set(result.cached)
            for node_id in order:
                if node_id in cached:
                    continue
                self._run_node(node_id, prompt, extra_pnginfo, signatures[node_id], result, progress)
                result.executed.append(node_id)
            self._emit("executing", {"node": None, "prompt_id": result.prompt_id})
            self._emit("execution_success", {"prompt_id": result.prompt_id, "timestamp": _now_ms()})
            for node_id in order:
                entry = self._cache[node_id]
                result.outputs[node_id] = entry.outputs
                if entry.ui:
                    result.ui[node_id] = entry.ui
            result.files = ui_files(result.ui)
        return result

    def _outputs_for_this_process(self, prompt: Mapping[str, Any], outputs: list[str]) -> list[str]:
        """Under torchrun, rank 0 runs the whole workflow; the other processes run only the nodes
        that train on every process (RUNS_ON_EVERY_PROCESS) and what feeds them, so they write
        nothing and stop when training ends."""
        if HEADLESS.rank == 0:
            return outputs
        return [node_id for node_id, node in prompt.items()
                if getattr(self.registry[node["class_type"]], "RUNS_ON_EVERY_PROCESS", False)]

    def node_outputs(self, node_id: str) -> Optional[list[list]]:
        """The cached outputs of a node (one list per output), or None."""
        entry = self._cache.get(str(node_id))
        return entry.outputs if entry else None

    # ------------------------------------------------------------------ running
    def _run_node(self, node_id: str, prompt: dict, extra_pnginfo: dict, signature: Any, result: RunResult,
                  progress: ProgressFactory) -> None:
        node = prompt[node_id]
        class_type = node["class_type"]
        cls = self.registry[class_type]
        HEADLESS.running_node_id = node_id
        self._emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": result.prompt_id})
        try:
            HEADLESS.throw_if_interrupted()
            inputs = self._input_lists(node_id, node, cls, prompt, extra_pnginfo)
            instance = self._instances.get((node_id, class_type))
            if instance is None:
                instance = self._instances[(node_id, class_type)] = cls()
            outputs, ui = _call_over_lists(instance, cls, inputs)
        except BaseException as exc:
            self._cache.pop(node_id, None)
            if HEADLESS.is_interrupt(exc):
                self._emit("execution_interrupted", {"prompt_id": result.prompt_id, "node_id": node_id,
                                                     "node_type": class_type, "executed": list(result.executed)})
                if isinstance(exc, (InterruptedByUser, KeyboardInterrupt)):
                    raise
                raise InterruptedByUser(f"interrupted at node {node_id} ({class_type})") from exc
            formatted = traceback.format_exc()
            self._emit("execution_error", {
                "prompt_id": result.prompt_id, "node_id": node_id, "node_type": class_type,
                "executed": list(result.executed), "exception_message": str(exc),
                "exception_type": f"{type(exc).__module__}.{type(exc).__name__}", "traceback": formatted,
                "current_inputs": {k: _describe(v) for k, v in node["inputs"].items()}})
            raise NodeExecutionError(node_id, class_type, exc, formatted) from exc
        finally:
            progress.close_all()
            HEADLESS.running_node_id = None
        self._cache[node_id] = _CacheEntry(signature, outputs, ui)
        if ui:
            self._emit("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                    "prompt_id": result.prompt_id})

    def _input_lists(self, node_id: str, node: dict, cls: type, prompt: dict, extra_pnginfo: dict) -> dict:
        """Every input as a list: linked ones are the source output's list, constants [value]."""
        data: dict[str, list] = {}
        for name, info in node_inputs(cls).items():
            if info.section == "hidden":
                hidden = {"UNIQUE_ID": node_id, "PROMPT": prompt, "EXTRA_PNGINFO": extra_pnginfo}
                data[name] = [hidden.get(info.type)]
                continue
            if name not in node["inputs"]:
                continue
            value = node["inputs"][name]
            if is_link(value):
                source_id, slot = value
                data[name] = self._cache[source_id].outputs[slot]
            else:
                data[name] = [unwrap_value(value)]
        return data

    # ------------------------------------------------------------------ caching
    def _signatures(self, prompt: dict, order: list[str]) -> dict[str, Any]:
        """Signatures in dependency order: class, IS_CHANGED, constants, ancestors' signatures."""
        signatures: dict[str, Any] = {}
        for node_id in order:
            node = prompt[node_id]
            cls = self.registry[node["class_type"]]
            declared = node_inputs(cls)
            parts: list[Any] = [node["class_type"], self._is_changed(cls, node, declared)]
            for name in sorted(node["inputs"]):
                value = node["inputs"][name]
                if is_link(value):
                    parts.append((name, "link", signatures[value[0]], value[1]))
                else:
                    parts.append((name, _freeze(unwrap_value(value))))
            uses_id = getattr(cls, "NOT_IDEMPOTENT", False) or any(
                info.section == "hidden" and info.type == "UNIQUE_ID" for info in declared.values())
            if uses_id:
                parts.append(("node_id", node_id))
            # A digest, not the nested tuple: comparing ancestors' nested signatures would be
            # quadratic and recursive on long chains.
            signatures[node_id] = hashlib.sha256(repr(parts).encode()).hexdigest()
        return signatures

    @staticmethod
    def _is_changed(cls: type, node: dict, declared: dict) -> Any:
        """IS_CHANGED on the class with constant inputs (linked ones None); NaN/error = always rerun."""
        check = getattr(cls, "IS_CHANGED", None)
        if check is None:
            return None
        arguments = {name: (None if is_link(node["inputs"][name]) else unwrap_value(node["inputs"][name]))
                     for name in declared if name in node["inputs"]}
        try:
            parameters = inspect.signature(check).parameters.values()
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
                accepted = {p.name for p in parameters}
                arguments = {k: v for k, v in arguments.items() if k in accepted}
            value = check(**arguments)
        except Exception:
            return ("always rerun", next(_ALWAYS_RERUN))
        if isinstance(value, float) and math.isnan(value):
            return ("always rerun", next(_ALWAYS_RERUN))
        return _freeze(value)

    # ------------------------------------------------------------------ host hooks
    @contextlib.contextmanager
    def _host_hooks(self, prompt: dict, prompt_id: str) -> Iterator[ProgressFactory]:
        """Point the adapter's headless hooks at this run, and restore them afterwards."""
        def on_progress(value: int, total: int, node_id: Optional[str], preview: Any) -> None:
            self._emit("progress", {"value": value, "max": total, "node": node_id, "prompt_id": prompt_id})

        def describe(node_id: Optional[str]) -> str:
            node = prompt.get(node_id or "", {})
            return f"#{node_id} {node.get('class_type', '')}".strip()

        def on_event(event: str, data: dict) -> None:
            progress.note_event(data)
            self._emit(event, data)

        progress = ProgressFactory(on_progress, self.show_progress, describe)
        saved = (HEADLESS.running_node_id, HEADLESS.progress_factory, HEADLESS.event_sink)
        HEADLESS.progress_factory = progress
        HEADLESS.event_sink = on_event
        try:
            yield progress
        finally:
            progress.close_all()
            HEADLESS.running_node_id, HEADLESS.progress_factory, HEADLESS.event_sink = saved

    def _emit(self, event: str, data: dict) -> None:
        if self.event_callback is not None:
            self.event_callback(event, data)


# ---------------------------------------------------------------------- module helpers
def execution_order(prompt: Mapping[str, dict], outputs: list[str]) -> list[str]:
    """Ancestors of `outputs` in dependency order (sources by ascending id first); raises
    DependencyCycleError."""
    cycle = find_cycle(prompt, outputs)
    if cycle:
        raise DependencyCycleError(cycle)
    order: list[str] = []
    seen: set[str] = set()
    for output in sorted(outputs, key=_id_key):
        if output in seen:
            continue
        seen.add(output)
        path, pending = [output], [iter(link_sources(prompt[output]))]
        while pending:  # iterative post-order: long chains never hit the recursion limit
            source = next(pending[-1], None)
            if source is None:
                order.append(path.pop())
                pending.pop()
            elif source not in seen and source in prompt:
                seen.add(source)
                path.append(source)
                pending.append(iter(link_sources(prompt[source])))
    return order


def _call_over_lists(instance: Any, cls: type, inputs: dict[str, list]) -> tuple[list[list], dict]:
    """Call the node function per list index (or once with whole lists) and merge results."""
    function = getattr(instance, cls.FUNCTION)
    if getattr(cls, "INPUT_IS_LIST", False):
        calls = [inputs]
    elif not inputs:
        calls = [{}]
    else:
        empty = [name for name, values in inputs.items() if len(values) == 0]
        if empty:
            raise ValueError(f"input '{empty[0]}' received an empty list, so there is nothing to process")
        length = max(len(values) for values in inputs.values())
        calls = [{name: values[min(i, len(values) - 1)] for name, values in inputs.items()} for i in range(length)]

    count = len(return_types(cls))
    is_list = output_is_list(cls)
    outputs: list[list] = [[] for _ in range(count)]
    ui: dict[str, list] = {}
    for kwargs in calls:
        HEADLESS.throw_if_interrupted()
        returned = function(**kwargs)
        if isinstance(returned, dict):
            if "expand" in returned:
                raise TypeError("node expansion (returning 'expand') is not supported headless")
            for key, value in (returned.get("ui") or {}).items():
                ui.setdefault(key, []).extend(value if isinstance(value, (list, tuple)) else [value])
            returned = returned.get("result", (None,) * count)
        if returned is None and count == 0:
            returned = ()
        if not isinstance(returned, (tuple, list)) or len(returned) != count:
            raise TypeError(f"{cls.__name__}.{cls.FUNCTION} returned {_describe(returned)}; "
                            f"expected a tuple of {count} value(s) for RETURN_TYPES {return_types(cls)}")
        for index, value in enumerate(returned):
            if is_list[index]:
                if not isinstance(value, (list, tuple)):
                    raise TypeError(f"output {index} is marked OUTPUT_IS_LIST but {cls.FUNCTION} returned "
                                    f"{_describe(value)}, not a list")
                outputs[index].extend(value)
            else:
                outputs[index].append(value)
    return outputs, ui


def ui_files(ui: Mapping[str, dict]) -> list[Path]:
    """Paths of the files `ui` entries name ({filename, subfolder, type}), in node order."""
    folders = {"output": HEADLESS.output_directory, "temp": HEADLESS.temp_directory,
               "input": HEADLESS.input_directory}
    files: list[Path] = []
    for node_ui in ui.values():
        for entries in node_ui.values():
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and "filename" in entry:
                    folder = folders.get(entry.get("type", "output"), HEADLESS.output_directory)()
                    files.append(folder / (entry.get("subfolder") or "") / entry["filename"])
    return files


def _freeze(value: Any) -> Any:
    """A hashable, type-tagged stand-in for a constant, for signature comparison."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_freeze(v) for v in value))
    if value is None or isinstance(value, (str, int, float, bool)):
        return (type(value).__name__, value)
    return ("repr", type(value).__name__, repr(value))


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _id_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _now_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["Executor", "RunResult", "NodeExecutionError", "DependencyCycleError", "PromptValidationError",
           "ValidationIssue", "InterruptedByUser", "execution_order", "ui_files"]
