"""The public face of every node: what saved workflows depend on.

`describe_registry()` reads, per node ID, the display name, category, every input (section,
name, type or combo options, default, range, widget or socket) and the outputs. Tooltips and
descriptions are left out: they may improve freely. The snapshot in interface_snapshot.json
was written from the code before the architecture refactor; `python -m tests.nodes.interface`
prints the current description (used once to write it)."""
from __future__ import annotations

import json
from typing import Any

FROZEN_OPTION_KEYS = ("default", "min", "max", "step", "forceInput", "multiline", "control_after_generate",
                      "image_upload", "multi_select")


def _describe_input(section: str, name: str, entry: Any) -> dict:
    if section == "hidden":
        return {"section": section, "name": name, "type": entry}
    kind = entry[0]
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    described: dict[str, Any] = {"section": section, "name": name}
    if isinstance(kind, (list, tuple)):
        described["type"], described["options"] = "COMBO", list(kind)
    else:
        described["type"] = kind
        if kind == "COMBO":
            described["options"] = list(options.get("options", []))
    for key in FROZEN_OPTION_KEYS:
        if key in options:
            described[key] = options[key]
    return described


def describe_node(node_id: str, cls: type, display_name: str) -> dict:
    declared = cls.INPUT_TYPES() or {}
    inputs = [_describe_input(section, name, entry)
              for section in ("required", "optional", "hidden")
              for name, entry in (declared.get(section) or {}).items()]
    return {
        "id": node_id, "display_name": display_name, "category": getattr(cls, "CATEGORY", ""),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        "input_is_list": bool(getattr(cls, "INPUT_IS_LIST", False)),
        "inputs": inputs,
        "outputs": list(getattr(cls, "RETURN_TYPES", ())),
        "output_names": list(getattr(cls, "RETURN_NAMES", None) or getattr(cls, "RETURN_TYPES", ())),
        "output_is_list": [bool(x) for x in (getattr(cls, "OUTPUT_IS_LIST", None) or ())],
    }


def describe_registry(classes: dict, names: dict) -> dict:
    return {node_id: describe_node(node_id, cls, names.get(node_id, node_id))
            for node_id, cls in sorted(classes.items())}


if __name__ == "__main__":  # pragma: no cover - a maintenance tool
    import tempfile

    from hypernet_studio.runtime.registry import build_registry

    with tempfile.TemporaryDirectory() as empty:
        from hypernet_studio.runtime.api import headless_settings

        with headless_settings(base_dir=empty):
            classes, names = build_registry(include_standins=True)
            print(json.dumps(describe_registry(classes, names), indent=1, default=str))
