"""Check an API prompt before anything runs, the way ComfyUI does, with its error type names.

Only output nodes and their ancestors are checked (those are what runs). Every problem
is reported, each naming the node id, its class and the input. Constants are coerced
like ComfyUI (INT via int(), FLOAT via float(), ...) into the prompt the executor gets."""
from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .nodeinfo import InputInfo, is_output_node, node_inputs, return_types, type_to_str, types_match
from .workflow import is_link, unwrap_value

_COERCE = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
# How the library's InputError (and our nodes' VALIDATE_INPUTS) start a message about one input.
_INPUT_PREFIX = re.compile(r"^input '([^']+)': ")


@dataclass
class ValidationIssue:
    """One problem: `type` is ComfyUI's error type name."""

    type: str
    message: str
    node_id: Optional[str] = None
    class_type: Optional[str] = None
    input_name: Optional[str] = None
    details: str = ""
    extra_info: dict = field(default_factory=dict)

    def __str__(self) -> str:
        where = []
        if self.node_id is not None:
            where.append(f"node {self.node_id}" + (f" ({self.class_type})" if self.class_type else ""))
        if self.input_name is not None:
            where.append(f"input '{self.input_name}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message} [{self.type}]" if prefix else f"{self.message} [{self.type}]"


@dataclass
class ValidationResult:
    """`prompt` is the coerced copy to execute; `outputs` the output node ids."""

    issues: list[ValidationIssue]
    outputs: list[str]
    prompt: dict

    @property
    def ok(self) -> bool:
        return not self.issues

    def node_errors(self) -> dict:
        """ComfyUI's POST /prompt `node_errors` shape."""
        errors: dict[str, dict] = {}
        for issue in self.issues:
            if issue.node_id is None:
                continue
            entry = errors.setdefault(issue.node_id, {"errors": [], "dependent_outputs": [],
                                                      "class_type": issue.class_type})
            entry["errors"].append({"type": issue.type, "message": issue.message, "details": issue.details,
                                    "extra_info": {"input_name": issue.input_name, **issue.extra_info}})
        return errors


class PromptValidationError(ValueError):
    """Raised by the executor for an invalid prompt; `.issues` lists every problem."""

    def __init__(self, issues: list[ValidationIssue]):
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"the workflow is invalid ({len(issues)} problem{'s' * (len(issues) != 1)}):\n{lines}")


def close_matches(name: str, known: list[str]) -> list[str]:
    """Class names that look like `name` (typos, case)."""
    lowered = {k.lower(): k for k in known}
    matches = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    matches += [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)]
    return list(dict.fromkeys(matches))[:3]


def validate_prompt(prompt: Mapping[str, Any], registry: Mapping[str, type]) -> ValidationResult:
    """Validate every output node and its ancestors; return issues and the coerced prompt."""
    issues: list[ValidationIssue] = []
    coerced = {str(nid): {**node, "inputs": dict(node.get("inputs") or {})} for nid, node in prompt.items()}

    for node_id, node in coerced.items():
        class_type = node.get("class_type")
        if class_type not in registry:
            hints = close_matches(str(class_type), list(registry))
            hint = f"; did you mean {', '.join(hints)}?" if hints else ""
            issues.append(ValidationIssue("invalid_prompt", f"unknown node type {class_type!r}{hint}",
                                          node_id, class_type, extra_info={"close_matches": hints}))

    outputs = sorted((nid for nid, node in coerced.items()
                      if node.get("class_type") in registry and is_output_node(registry[node["class_type"]])),
                     key=_id_key)
    if not outputs:
        issues.append(ValidationIssue("prompt_no_outputs",
                                      "the workflow has no output node (e.g. SaveImage), so nothing would run"))
        return ValidationResult(issues, outputs, coerced)

    checked: set[str] = set()
    pending = list(outputs)
    while pending:
        node_id = pending.pop()
        if node_id in checked or node_id not in coerced:
            continue
        checked.add(node_id)
        node = coerced[node_id]
        cls = registry.get(node.get("class_type"))
        if cls is None:
            continue
        node_issues, sources = _validate_node(node_id, node, cls, coerced, registry)
        issues.extend(node_issues)
        pending.extend(sources)

    issues.extend(_cycle_issues(coerced, outputs))
    issues.extend(_resumed_step_issues(coerced, checked))
    return ValidationResult(issues, outputs, coerced)


def _resumed_step_issues(prompt: dict, checked: set[str]) -> list[ValidationIssue]:
    """Train Hypernet continuing the file a Load Hypernet node reads: `steps` must go beyond the
    file's step. ComfyUI never shows a node its linked inputs at validation, so only this
    runtime, which sees the whole graph, refuses it before any model loads."""
    from ..hypernet.errors import InputError
    from ..nodes.model import LoadHypernetNode
    from ..nodes.train import TrainHypernetNode, check_steps_beyond_file

    issues = []
    for node_id in sorted(checked, key=_id_key):
        node = prompt[node_id]
        link, steps = node["inputs"].get("hypernetwork"), node["inputs"].get("steps")
        if node.get("class_type") != TrainHypernetNode.NODE_ID or not is_link(link) or not isinstance(steps, int):
            continue
        source = prompt.get(str(link[0])) or {}
        name = (source.get("inputs") or {}).get("hypernetwork_name")
        if source.get("class_type") != LoadHypernetNode.NODE_ID or not isinstance(name, str):
            continue
        try:
            check_steps_beyond_file(steps, name)
        except InputError as exc:
            issues.append(ValidationIssue("custom_validation_failed", exc.message, node_id, node["class_type"],
                                          exc.input_name))
    return issues


class _NodeCheck:
    """The checks of one node: every declared input, then the node's own VALIDATE_INPUTS."""

    def __init__(self, node_id: str, node: dict, cls: type, prompt: dict, registry: Mapping[str, type]):
        self.node_id, self.node, self.cls, self.prompt, self.registry = node_id, node, cls, prompt, registry
        self.issues: list[ValidationIssue] = []
        self.sources: list[str] = []
        self.linked_types: dict[str, str] = {}
        self.custom_checked, self.wants_input_types = _validate_inputs_parameters(cls)

    def issue(self, kind: str, message: str, name: Optional[str], **extra) -> None:
        self.issues.append(ValidationIssue(kind, message, self.node_id, self.node["class_type"], name,
                                           extra_info=extra))

    def run(self) -> tuple[list[ValidationIssue], list[str]]:
        declared = node_inputs(self.cls)
        inputs = self.node["inputs"]
        for name, info in declared.items():
            if info.section == "hidden":
                continue
            if name not in inputs:
                self._missing(name, info)
            elif is_link(inputs[name]):
                self._linked(name, info, inputs[name])
            else:
                self._constant(name, info, inputs)
        if getattr(self.cls, "VALIDATE_INPUTS", None) is not None and not any(
                i.type in ("required_input_missing", "bad_linked_input") for i in self.issues):
            self._custom(declared, inputs)
        return self.issues, self.sources

    def _missing(self, name: str, info: InputInfo) -> None:
        if not info.required:
            return
        dropped = ((self.node.get("_meta") or {}).get("dropped_links") or {}).get(name)
        reason = (f"its link from node {dropped} was dropped: that node is muted, or bypassed with no input of "
                  "this type" if dropped is not None else "not linked and no value")
        self.issue("required_input_missing", f"required input '{name}' ({info.type_name}) is missing ({reason})",
                   name)

    def _linked(self, name: str, info: InputInfo, value: list) -> None:
        source_id, slot = value
        source = self.prompt.get(source_id)
        if source is None:
            self.issue("bad_linked_input", f"linked to node {source_id}, which does not exist in the workflow", name)
            return
        self.sources.append(source_id)
        source_cls = self.registry.get(source.get("class_type"))
        if source_cls is None:
            return  # reported as an unknown node type
        outputs = return_types(source_cls)
        if not 0 <= slot < len(outputs):
            self.issue("bad_linked_input", f"linked to output {slot} of node {source_id} ({source['class_type']}), "
                       f"which has only {len(outputs)} output{'s' * (len(outputs) != 1)}", name)
            return
        received = outputs[slot]
        self.linked_types[name] = type_to_str(received)
        if not self.wants_input_types and not types_match(received, info.type):
            self.issue("return_type_mismatch", f"expects {info.type_name} but is linked to output {slot} of node "
                       f"{source_id} ({source['class_type']}), which gives {type_to_str(received)}", name,
                       received_type=type_to_str(received), linked_node=[source_id, slot])

    def _constant(self, name: str, info: InputInfo, inputs: dict) -> None:
        value = inputs[name]
        if isinstance(value, list):
            self.issue("bad_linked_input", f"malformed link {value!r}: expected [node_id, output_index]", name)
            return
        wrapped = value is not unwrap_value(value)
        problem, value = _check_constant(info, unwrap_value(value), skip_range=name in self.custom_checked)
        if problem:
            self.issue(problem[0], problem[1], name, received_value=_short(value))
        else:
            # Arrays stay wrapped, so a two-item value can never be read as a link later.
            inputs[name] = {"__value__": value} if wrapped or isinstance(value, list) else value

    def _custom(self, declared: dict, inputs: dict) -> None:
        """VALIDATE_INPUTS with the inputs it names (linked ones None), as ComfyUI calls it."""
        if "**" in self.custom_checked:
            arguments = {n: (None if is_link(v) else unwrap_value(v)) for n, v in inputs.items()}
        else:
            arguments = {name: (None if is_link(inputs[name]) else unwrap_value(inputs[name]))
                         for name in declared if name in inputs and name in self.custom_checked}
        if getattr(self.cls, "INPUT_IS_LIST", False):
            arguments = {name: [value] for name, value in arguments.items()}  # as ComfyUI passes them
        if self.wants_input_types:
            arguments["input_types"] = self.linked_types
        try:
            verdict = self.cls.VALIDATE_INPUTS(**arguments)
        except Exception as exc:  # a broken check is reported, not raised
            verdict = f"{type(exc).__name__}: {exc}"
        if verdict is not True:
            message = "VALIDATE_INPUTS rejected the inputs" if verdict in (False, None) else str(verdict)
            named = _INPUT_PREFIX.match(message)
            name = named.group(1) if named and named.group(1) in declared else None
            self.issue("custom_validation_failed", message[named.end():] if name else message, name)


def _validate_node(node_id: str, node: dict, cls: type, prompt: dict, registry: Mapping[str, type]
                   ) -> tuple[list[ValidationIssue], list[str]]:
    return _NodeCheck(node_id, node, cls, prompt, registry).run()


def _check_constant(info: InputInfo, value: Any, skip_range: bool) -> tuple[Optional[tuple[str, str]], Any]:
    """Coerce and range-check a constant input; returns (problem_or_None, coerced_value)."""
    if info.is_combo:
        options = info.combo_options or []
        chosen = value if info.options.get("multi_select") and isinstance(value, list) else [value]
        if not skip_range and any(item not in options for item in chosen):
            if not options:
                # Like ComfyUI, an empty list accepts nothing; for model lists it means an empty folder.
                return ("value_not_in_list", f"value {value!r} is not available: the list of options is "
                                             "empty (for a model file: its models folder has no files)"), value
            shown = ", ".join(repr(o) for o in options[:10]) + (", ..." if len(options) > 10 else "")
            return ("value_not_in_list", f"value {value!r} is not one of the options: {shown}"), value
        return None, value
    coerce = _COERCE.get(info.type)
    if coerce is None:
        if info.type == "*" or info.options.get("rawLink"):
            return None, value
        return ("invalid_input_type", f"expects a link from an output of type {info.type_name}, "
                                      f"got the constant {_short(value)!r}"), value
    if info.type in ("INT", "FLOAT") and isinstance(value, bool):
        return ("invalid_input_type", f"expects {info.type} but got the boolean {value!r}"), value
    if info.type == "INT" and isinstance(value, float) and not value.is_integer():
        return ("invalid_input_type", f"expects a whole number (INT) but got {value!r}"), value
    try:
        if info.type == "BOOLEAN" and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(value)
            converted = lowered in ("true", "1")
        elif info.type == "STRING" and not isinstance(value, (str, int, float)):
            raise TypeError(type(value).__name__)
        else:
            converted = coerce(value)
    except (TypeError, ValueError, OverflowError):
        return ("invalid_input_type", f"expects {info.type} but got {_short(value)!r}"), value
    if info.type in ("INT", "FLOAT") and not skip_range:
        low, high = info.options.get("min"), info.options.get("max")
        if low is not None and converted < low:
            return ("value_smaller_than_min", f"value {converted} is smaller than the minimum {low}"), converted
        if high is not None and converted > high:
            return ("value_bigger_than_max", f"value {converted} is bigger than the maximum {high}"), converted
    return None, converted


def _validate_inputs_parameters(cls: type) -> tuple[set[str], bool]:
    """Names VALIDATE_INPUTS takes (those skip built-in range/combo checks), and whether it
    wants `input_types` (which disables the link type check). `**` means every input."""
    custom = getattr(cls, "VALIDATE_INPUTS", None)
    if custom is None:
        return set(), False
    names: set[str] = set()
    for parameter in inspect.signature(custom).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            names.add("**")
        elif parameter.name not in ("self", "cls"):
            names.add(parameter.name)
    wants_input_types = "input_types" in names
    names.discard("input_types")
    return names, wants_input_types


def _cycle_issues(prompt: dict, outputs: list[str]) -> list[ValidationIssue]:
    """One `dependency_cycle` issue per node on a cycle among the outputs' ancestors."""
    cycle = find_cycle(prompt, outputs)
    if not cycle:
        return []
    path = " -> ".join(cycle + [cycle[0]])
    return [ValidationIssue("dependency_cycle", f"dependency cycle: {path}", nid, prompt[nid].get("class_type"))
            for nid in cycle]


def find_cycle(prompt: Mapping[str, dict], roots: list[str]) -> list[str]:
    """The node ids of one cycle reachable from `roots` through links, or [] if none.

    Iterative depth-first search, so long chains do not hit Python's recursion limit."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in roots:
        if root not in prompt or root in state:
            continue
        path = [root]
        pending = [iter(link_sources(prompt[root]))]
        state[root] = 1
        while pending:
            source = next(pending[-1], None)
            if source is None:
                state[path.pop()] = 2
                pending.pop()
                continue
            if source not in prompt or state.get(source) == 2:
                continue
            if state.get(source) == 1:
                return path[path.index(source):]
            state[source] = 1
            path.append(source)
            pending.append(iter(link_sources(prompt[source])))
    return []


def link_sources(node: Mapping[str, Any]) -> list[str]:
    """Ids of the nodes `node` takes links from, ascending and without repeats."""
    sources = {value[0] for value in (node.get("inputs") or {}).values() if is_link(value)}
    return sorted(sources, key=_id_key)


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 60 else text[:57] + "..."


def _id_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)
