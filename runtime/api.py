"""Run workflows in-process: the library face of the CLI.

    from hypernet_studio.runtime.api import run_workflow_file
    result = run_workflow_file("workflows/txt2img.json", overrides={"3.seed": 7}, base_dir=tmp)
    result.files  # paths of the images the output nodes wrote

Folder settings given here apply for the call only; without them the current headless
settings (e.g. the tests' `headless_dirs` fixture) are used."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

from .executor import EventCallback, Executor, RunResult
from .headless_host import HEADLESS
from .workflow import apply_overrides, load_workflow, parse_workflow

Overrides = Union[Iterable[str], Mapping[str, Any], None]
_SETTINGS = ("base_dir", "input_dir", "output_dir", "temp_dir", "models_dir", "device")


@contextlib.contextmanager
def headless_settings(base_dir=None, input_dir=None, output_dir=None, temp_dir=None, models_dir=None,
                      device=None) -> Iterator[None]:
    """Temporarily apply the given folder/device settings (None = leave as is).

    A new base_dir also resets the per-folder overrides, so every folder follows it."""
    saved = {key: getattr(HEADLESS, key) for key in _SETTINGS}
    changes: dict[str, Any] = {}
    if base_dir is not None:
        changes.update(base_dir=Path(base_dir), input_dir=None, output_dir=None, temp_dir=None, models_dir=None)
    for key, value in (("input_dir", input_dir), ("output_dir", output_dir), ("temp_dir", temp_dir),
                       ("models_dir", models_dir), ("device", device)):
        if value is not None:
            changes[key] = value
    HEADLESS.configure(**changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(HEADLESS, key, value)


def run_prompt(prompt: Mapping[str, Any], *, ui_workflow: Optional[dict] = None, overrides: Overrides = None,
               executor: Optional[Executor] = None, registry: Optional[Mapping[str, type]] = None,
               event_callback: Optional[EventCallback] = None, **settings: Any) -> RunResult:
    """Run an API prompt (already loaded). `settings` are those of headless_settings().

    The UI workflow, when given, goes into EXTRA_PNGINFO["workflow"] as ComfyUI's editor sends it."""
    executor = executor or Executor(registry, event_callback=event_callback)
    prompt = apply_overrides(dict(prompt), overrides, executor.registry)
    extra_pnginfo = {"workflow": ui_workflow} if ui_workflow is not None else {}
    with headless_settings(**settings):
        return executor.run(prompt, extra_pnginfo=extra_pnginfo)


def run_workflow_file(path: Union[str, Path], overrides: Overrides = None, *, base_dir=None, input_dir=None,
                      output_dir=None, temp_dir=None, models_dir=None, device=None,
                      executor: Optional[Executor] = None, registry: Optional[Mapping[str, type]] = None,
                      event_callback: Optional[EventCallback] = None) -> RunResult:
    """Load a workflow file (UI or API format), apply `overrides` and run it.

    `overrides`: {"ID.input": value}, {"ID": {"input": value}} or ["ID.input=value", ...]; they
    replace widget values after UI conversion. Pass an `executor` to keep its cache between runs.
    Raises WorkflowError (unreadable file, bad override), PromptValidationError (`.issues`),
    NodeExecutionError (`.node_id`, `.class_type`, `.original`) or InterruptedByUser."""
    executor = executor or Executor(registry, event_callback=event_callback)
    prompt, ui_workflow = load_workflow(path, executor.registry)
    return run_prompt(prompt, ui_workflow=ui_workflow, overrides=overrides, executor=executor,
                      base_dir=base_dir, input_dir=input_dir, output_dir=output_dir, temp_dir=temp_dir,
                      models_dir=models_dir, device=device)


def run_workflow(data: Any, overrides: Overrides = None, **kwargs: Any) -> RunResult:
    """Like run_workflow_file, for already-parsed workflow JSON (UI or API format)."""
    executor = kwargs.pop("executor", None) or Executor(kwargs.pop("registry", None),
                                                        event_callback=kwargs.pop("event_callback", None))
    prompt, ui_workflow = parse_workflow(data, executor.registry)
    return run_prompt(prompt, ui_workflow=ui_workflow, overrides=overrides, executor=executor, **kwargs)
