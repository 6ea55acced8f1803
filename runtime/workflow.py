"""Workflow files: read them, tell the two formats apart, and turn the editor's UI format
into the API prompt the executor runs.

The UI format (what ComfyUI's editor saves) stores widget values positionally in
`widgets_values`, links in a separate table, and frontend-only nodes (Reroute, Note,
PrimitiveNode) that never reach the backend. The conversion follows the frontend's
documented graph-to-prompt rules; widget order comes from the node class's INPUT_TYPES.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from .nodeinfo import CONTROL_VALUES, InputInfo, node_inputs, types_match

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
NOTE_TYPES = {"Note", "MarkdownNote"}
REROUTE_TYPE = "Reroute"
PRIMITIVE_TYPE = "PrimitiveNode"
VIRTUAL_TYPES = NOTE_TYPES | {REROUTE_TYPE, PRIMITIVE_TYPE}


class WorkflowError(ValueError):
    """A workflow file that cannot be read or converted (bad JSON, wrong shape, bad override)."""


# --------------------------------------------------------------------------- reading
def read_json_file(path: str | Path) -> Any:
    """Parse a JSON file; errors name the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"{path}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def is_ui_workflow(data: Any) -> bool:
    """UI workflows have a `nodes` list; API prompts are a dict of node id -> {class_type, inputs}."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def load_workflow(path: str | Path, registry: Optional[Mapping[str, type]] = None
                  ) -> tuple[dict, Optional[dict]]:
    """Read a workflow file in either format: returns (api_prompt, ui_workflow_or_None)."""
    data = read_json_file(path)
    try:
        return parse_workflow(data, registry)
    except WorkflowError as exc:
        raise WorkflowError(f"{path}: {exc}") from None


def parse_workflow(data: Any, registry: Optional[Mapping[str, type]] = None
                   ) -> tuple[dict, Optional[dict]]:
    """Like load_workflow, for already-parsed JSON."""
    if registry is None:
        from .registry import build_registry

        registry = build_registry()[0]
    if is_ui_workflow(data):
        return ui_to_api(data, registry), data
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict) \
            and all(isinstance(v, dict) for v in data["prompt"].values()):
        # The body of a POST /prompt request: {"prompt": ..., "extra_data": ...}.
        workflow = (data.get("extra_data") or {}).get("extra_pnginfo", {}).get("workflow")
        return _check_api_prompt(data["prompt"]), workflow
    return _check_api_prompt(data), None


def _check_api_prompt(data: Any) -> dict:
    if not isinstance(data, dict) or not data:
        raise WorkflowError("not a workflow: expected a UI workflow (with 'nodes' and 'links') "
                            "or an API prompt (an object of node id -> {class_type, inputs})")
    for node_id, node in data.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise WorkflowError(f"node {node_id!r}: expected an object with 'class_type' and 'inputs'")
        if not isinstance(node.get("inputs", {}), dict):
            raise WorkflowError(f"node {node_id!r} ({node['class_type']}): 'inputs' must be an object")
    return {str(k): v for k, v in data.items()}


# --------------------------------------------------------------------------- UI -> API
@dataclass(frozen=True)
class _Link:
    id: Any
    origin_id: Any
    origin_slot: int
    target_id: Any
    target_slot: int
    type: Any


def _links_by_id(workflow: dict) -> dict[Any, _Link]:
    """Both link encodings: 0.4 arrays and schema-1 objects."""
    links: dict[Any, _Link] = {}
    for entry in workflow.get("links") or []:
        if isinstance(entry, dict):
            link = _Link(entry.get("id"), entry.get("origin_id"), int(entry.get("origin_slot", 0)),
                         entry.get("target_id"), int(entry.get("target_slot", 0)), entry.get("type"))
        elif isinstance(entry, (list, tuple)) and len(entry) >= 5:
            link = _Link(entry[0], entry[1], int(entry[2]), entry[3], int(entry[4]),
                         entry[5] if len(entry) > 5 else None)
        else:
            raise WorkflowError(f"malformed link entry {entry!r}")
        links[link.id] = link
    return links


class _Converter:
    def __init__(self, workflow: dict, registry: Mapping[str, type]):
        self.registry = registry
        self.nodes = {}
        for node in workflow["nodes"]:
            if not isinstance(node, dict) or "id" not in node or "type" not in node:
                raise WorkflowError(f"malformed node entry (needs 'id' and 'type'): {str(node)[:80]}")
            self.nodes[node["id"]] = node
        self.links = _links_by_id(workflow)
        self.subgraph_ids = {sg.get("id") for sg in
                             ((workflow.get("definitions") or {}).get("subgraphs") or []) if isinstance(sg, dict)}

    def convert(self) -> dict:
        prompt: dict[str, dict] = {}
        for node in sorted(self.nodes.values(), key=lambda n: _id_sort_key(n["id"])):
            if node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS) or node["type"] in VIRTUAL_TYPES:
                continue
            if str(node["type"]).startswith(("workflow>", "workflow/")):
                raise WorkflowError(f"node {node['id']} is a group node ({node['type']}); group nodes are not "
                                    "supported headless: convert it to nodes in the editor first")
            if node["type"] in self.subgraph_ids:
                raise WorkflowError(f"node {node['id']} is a subgraph ({node.get('title') or node['type']}); "
                                    "subgraphs are not supported headless: unpack it in the editor first")
            prompt[str(node["id"])] = self._convert_node(node)
        # Like the frontend: drop links whose source did not make it into the prompt (muted nodes).
        for entry in prompt.values():
            for name, value in list(entry["inputs"].items()):
                if _is_link(value) and value[0] not in prompt and self._exists(value[0]):
                    del entry["inputs"][name]
                    # Kept only so validation can say why the input is missing.
                    entry["_meta"].setdefault("dropped_links", {})[name] = value[0]
        return prompt

    def _exists(self, node_id: str) -> bool:
        return any(str(k) == node_id for k in self.nodes)

    def _convert_node(self, node: dict) -> dict:
        cls = self.registry.get(node["type"])
        inputs: dict[str, Any] = {}
        meta: dict[str, Any] = {"title": node.get("title") or node["type"]}
        if cls is not None:
            inputs.update(self._widget_values(node, cls))
        for socket in node.get("inputs") or []:
            if socket.get("link") is None:
                continue
            # A converted widget's INPUT_TYPES name is widget.name (the socket name may be a label).
            name = (socket.get("widget") or {}).get("name") or socket.get("name")
            resolved = self._resolve_link(socket["link"])
            if resolved is _DROP:
                link = self.links.get(socket["link"])
                if link is not None and name not in inputs:
                    # Kept only so validation can say why the input is missing.
                    meta.setdefault("dropped_links", {})[name] = str(link.origin_id)
                continue
            inputs[name] = resolved  # the link wins over the widget value
        return {"class_type": node["type"], "inputs": inputs, "_meta": meta}

    def _widget_values(self, node: dict, cls: type) -> dict[str, Any]:
        values = node.get("widgets_values")
        if values is None:
            return {}
        widgets = [info for info in node_inputs(cls).values() if info.is_widget]
        if isinstance(values, dict):  # some nodes save widgets by name
            return {info.name: _wrap_array(values[info.name]) for info in widgets if info.name in values}
        return {name: _wrap_array(value) for name, value in _assign_widget_values(widgets, list(values)).items()}

    def _resolve_link(self, link_id: Any) -> Any:
        """Follow a link back through reroutes, bypassed nodes and primitives to its real source."""
        seen = set()
        link = self.links.get(link_id)
        while link is not None:
            if link.id in seen:
                raise WorkflowError(f"link {link.id} loops through reroute/bypassed nodes")
            seen.add(link.id)
            origin = self.nodes.get(link.origin_id)
            if origin is None:
                # Keep it, so validation reports the missing node by id.
                return [str(link.origin_id), link.origin_slot]
            if origin["type"] == PRIMITIVE_TYPE:
                values = origin.get("widgets_values") or []
                return _wrap_array(values[0]) if values else _DROP
            if origin["type"] == REROUTE_TYPE:
                link = self._input_link(origin, 0)
                continue
            if origin.get("mode", MODE_ALWAYS) == MODE_BYPASS:
                link = self._bypass_input_link(origin, link)
                continue
            if origin["type"] in NOTE_TYPES:
                return _DROP
            return [str(origin["id"]), link.origin_slot]
        return _DROP

    def _input_link(self, node: dict, slot: int) -> Optional[_Link]:
        sockets = node.get("inputs") or []
        if slot >= len(sockets) or sockets[slot].get("link") is None:
            return None
        return self.links.get(sockets[slot]["link"])

    def _bypass_input_link(self, node: dict, link: _Link) -> Optional[_Link]:
        """A bypassed node passes through its first input of the output's type, same slot first."""
        outputs = node.get("outputs") or []
        wanted = link.type
        if wanted in (None, "*") and link.origin_slot < len(outputs):
            wanted = outputs[link.origin_slot].get("type")
        sockets = node.get("inputs") or []
        order = list(range(len(sockets)))
        if link.origin_slot < len(sockets):
            order.remove(link.origin_slot)
            order.insert(0, link.origin_slot)
        for slot in order:
            socket = sockets[slot]
            if wanted is None or types_match(socket.get("type"), wanted):
                # Like the frontend: the matching input wins even when it is unlinked (then
                # the link is dropped, not routed to a later input).
                return self._input_link(node, slot)
        return None


_DROP = object()


def _assign_widget_values(widgets: list[InputInfo], values: list) -> dict[str, Any]:
    """Map positional widgets_values onto widget inputs, skipping the hidden extras.

    After a seed-like INT (or an input with `control_after_generate`) the editor saves a
    fixed/increment/... value; after an `image_upload` combo the upload button's value. An
    extra is consumed when more values remain than real widgets, or when it looks like one."""
    assigned: dict[str, Any] = {}
    position = 0
    for index, info in enumerate(widgets):
        if position >= len(values):
            break
        assigned[info.name] = values[position]
        position += 1
        remaining_widgets = len(widgets) - index - 1
        extras = int(info.has_control_after_generate) + int(info.has_upload_button)
        for _ in range(extras):
            if position >= len(values):
                break
            more_values_than_widgets = len(values) - position > remaining_widgets
            looks_like_control = info.has_control_after_generate and values[position] in CONTROL_VALUES
            if more_values_than_widgets or looks_like_control:
                position += 1
    return assigned


def _wrap_array(value: Any) -> Any:
    """Array widget values are wrapped so the API cannot mistake them for links."""
    return {"__value__": value} if isinstance(value, list) else value


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _id_sort_key(node_id: Any) -> tuple:
    text = str(node_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def ui_to_api(workflow: dict, registry: Mapping[str, type]) -> dict:
    """Convert a UI-format workflow (version 0.4 or schema 1) into an API prompt."""
    if not is_ui_workflow(workflow):
        raise WorkflowError("not a UI workflow: no 'nodes' list")
    return _Converter(workflow, registry).convert()


def unknown_nodes(workflow: dict, registry: Mapping[str, type]) -> list[tuple[str, str]]:
    """(id, type) of active UI nodes whose class is unknown: their inputs cannot be named (or even
    told apart from widgets) without INPUT_TYPES, so a conversion would be wrong or lossy."""
    found = []
    for node in workflow.get("nodes") or []:
        if not isinstance(node, dict) or node.get("type") in VIRTUAL_TYPES or node.get("type") in registry:
            continue
        if node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        found.append((str(node.get("id")), str(node.get("type"))))
    return found


# --------------------------------------------------------------------------- API helpers
def is_link(value: Any) -> bool:
    """True for an API-prompt link `[source_id, output_slot]`."""
    return _is_link(value)


def unwrap_value(value: Any) -> Any:
    """Undo the `{"__value__": [...]}` wrapping of array widget values."""
    if isinstance(value, dict) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def parse_override(text: str) -> tuple[str, str, Any]:
    """`ID.input=value` -> (id, input, value); the value is JSON when it parses, else a string."""
    target, sep, raw = text.partition("=")
    node_id, dot, input_name = target.strip().partition(".")
    if not sep or not dot or not node_id or not input_name:
        raise WorkflowError(f"--set {text!r}: expected ID.input=value, e.g. 3.seed=42")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return node_id, input_name.strip(), value


def apply_overrides(prompt: dict, overrides: Iterable[str] | Mapping[str, Any] | None,
                    registry: Optional[Mapping[str, type]] = None) -> dict:
    """Return a copy of `prompt` with widget values replaced.

    `overrides` is a list of "ID.input=value" strings, or a mapping {"ID.input": value} or
    {"ID": {"input": value}}. An unknown node or input is an error, and so is replacing a link."""
    if not overrides:
        return prompt
    triples: list[tuple[str, str, Any]] = []
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            if isinstance(value, Mapping) and "." not in str(key):
                triples.extend((str(key), name, v) for name, v in value.items())
            else:
                node_id, dot, name = str(key).partition(".")
                if not dot:
                    raise WorkflowError(f"override {key!r}: expected 'ID.input'")
                triples.append((node_id, name, value))
    else:
        triples = [parse_override(text) for text in overrides]
    result = {node_id: {**node, "inputs": dict(node.get("inputs", {}))} for node_id, node in prompt.items()}
    for node_id, name, value in triples:
        node = result.get(node_id)
        if node is None:
            raise WorkflowError(f"--set {node_id}.{name}: there is no node {node_id} in the workflow "
                                f"(nodes: {', '.join(sorted(result, key=_id_sort_key))})")
        cls = (registry or {}).get(node["class_type"])
        known = set(node_inputs(cls)) if cls is not None else set(node["inputs"])
        if name not in known:
            raise WorkflowError(f"--set {node_id}.{name}: node {node_id} ({node['class_type']}) has no input "
                                f"{name!r} (inputs: {', '.join(sorted(known)) or 'none'})")
        if _is_link(node["inputs"].get(name)):
            source = node["inputs"][name][0]
            raise WorkflowError(f"--set {node_id}.{name}: input {name!r} of node {node_id} ({node['class_type']}) "
                                f"is linked to node {source}; only widget values can be set")
        node["inputs"][name] = _wrap_array(value)
    return result
