"""`hypernet-studio`: run, validate and convert workflows headless; list nodes; convert hypernetworks.

Exit codes: 0 success, 1 a node failed while running, 2 the input is invalid (file,
JSON, workflow validation, --set), 130 interrupted (Ctrl-C)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

EXIT_OK, EXIT_EXECUTION, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
DISTRIBUTION = "hypernet-studio"


def pack_version() -> str:
    """The version in pyproject.toml (its one home): the file beside this checkout or custom-node
    folder, else the installed distribution's metadata (a wheel carries no pyproject.toml)."""
    import re
    from importlib import metadata

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        project = pyproject.read_text(encoding="utf-8").split("[project]", 1)[-1].split("\n[", 1)[0]
        found = re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE)
        if found:
            return found.group(1)
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def _registry() -> dict:
    from .registry import build_registry

    return build_registry()[0]


def _display_names() -> dict:
    from .registry import build_registry

    return build_registry()[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypernet-studio", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run, validate and convert ComfyUI workflows headless; list nodes; convert hypernetworks.",
        epilog="exit codes: 0 success, 1 a node failed while running, 2 invalid input "
               "(file, JSON, workflow, --set), 130 interrupted\n"
               "example: hypernet-studio run workflows/txt2img.json --set 3.seed=7 --base-dir ~/hs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {pack_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a workflow (UI or API format)")
    run.add_argument("workflow", type=Path, help="workflow JSON file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="ID.input=value",
                     help="override a widget value (JSON if it parses, else a string); repeatable")
    _add_folder_arguments(run)
    run.add_argument("--output-dir", type=Path, help="output folder (default: BASE/output)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device")
    run.add_argument("--quiet", action="store_true",
                     help="only the files written and errors: no per-node lines, notes, warnings or progress bars")
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic GPU kernels, no TF32 (slower): a resumed run then repeats an unbroken "
                          "one bit for bit on the same GPU and software, where torch has such kernels")
    run.add_argument("--all-chunks", action="store_true",
                     help="run again while a Load Images with chunk_size above 0 has chunks left, each run taking "
                          "the next chunk (as queueing again in ComfyUI does): a big folder in one command")
    run.add_argument("--nproc-per-node", type=int, metavar="N",
                     help="train on N processes on this machine (one per GPU): hands over to torchrun, "
                          "as `torchrun --standalone --nproc-per-node N -m hypernet_studio.runtime run ...`")

    nodes = commands.add_parser("nodes", help="list the node types with their inputs")
    nodes.add_argument("--json", action="store_true", help="machine-readable output")

    validate = commands.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow", type=Path)
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="ID.input=value")
    _add_folder_arguments(validate)  # model and image lists come from these folders, as in `run`

    convert = commands.add_parser("convert", help="convert a UI workflow into the API prompt format")
    convert.add_argument("workflow", type=Path)
    convert.add_argument("-o", "--output", type=Path, help="write here (atomically) instead of stdout")

    convert_hn = commands.add_parser("convert-hypernet", help="convert a hypernetwork file (.pt <-> .safetensors)")
    convert_hn.add_argument("source", type=Path)
    convert_hn.add_argument("destination", type=Path, help="the format follows its extension")
    convert_hn.add_argument("--overwrite", action="store_true", help="replace DESTINATION if it exists")

    examples = commands.add_parser("examples", help="write example inputs for the shipped workflows")
    examples.add_argument("--base-dir", type=Path, help="folder holding models/ and input/ "
                          "(default: $HYPERNET_STUDIO_HOME or the current directory)")
    return parser


def _add_folder_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--base-dir", type=Path, help="folder holding models/, input/, output/, temp/ "
                         "(default: $HYPERNET_STUDIO_HOME or the current directory)")
    command.add_argument("--input-dir", type=Path, help="input folder (default: BASE/input)")
    command.add_argument("--models-dir", type=Path, help="models folder (default: BASE/models)")


def _configure_folders(args: argparse.Namespace) -> None:
    from .headless_host import HEADLESS

    base_dir = args.base_dir or Path(os.environ.get("HYPERNET_STUDIO_HOME", "."))
    HEADLESS.configure(base_dir=base_dir, input_dir=args.input_dir, output_dir=getattr(args, "output_dir", None),
                       models_dir=args.models_dir, temp_dir=None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console-script entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if getattr(args, "nproc_per_node", None) and "WORLD_SIZE" not in os.environ:
        return _hand_over_to_torchrun(args.nproc_per_node, argv)
    handler = {"run": _cmd_run, "nodes": _cmd_nodes, "validate": _cmd_validate, "convert": _cmd_convert,
               "convert-hypernet": _cmd_convert_hypernet, "examples": _cmd_examples}[args.command]
    try:
        return handler(args)
    except BrokenPipeError:  # e.g. `hypernet-studio nodes | head`
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK


# --------------------------------------------------------------------------- commands
def _load(path: Path, overrides: list[str], registry: dict):
    from .workflow import apply_overrides, load_workflow

    prompt, ui_workflow = load_workflow(path, registry)
    return apply_overrides(prompt, overrides, registry), ui_workflow


def _print_issues(path: Path, issues) -> None:
    print(f"error: {path} is not a valid workflow ({len(issues)} problem{'s' * (len(issues) != 1)}):",
          file=sys.stderr)
    for issue in issues:
        print(f"  {issue}", file=sys.stderr)


def _cmd_validate(args: argparse.Namespace) -> int:
    from .workflow import WorkflowError
    from .workflow_checks import validate_prompt

    _configure_folders(args)
    registry = _registry()
    try:
        prompt, _ = _load(args.workflow, args.overrides, registry)
    except WorkflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    checked = validate_prompt(prompt, registry)
    if not checked.ok:
        _print_issues(args.workflow, checked.issues)
        return EXIT_INVALID
    print(f"{args.workflow}: OK ({len(prompt)} nodes; outputs: {', '.join(checked.outputs)})")
    return EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..hypernet.files import atomic_write_text
    from .workflow import WorkflowError, unknown_nodes

    registry = _registry()
    try:
        prompt, ui_workflow = _load(args.workflow, [], registry)
    except WorkflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    unknown = (unknown_nodes(ui_workflow, registry) if ui_workflow is not None else
               [(node_id, node["class_type"]) for node_id, node in prompt.items()
                if node["class_type"] not in registry])
    if unknown:
        print(f"error: {args.workflow}: unknown node types (install the pack that provides them, or check the "
              "name):", file=sys.stderr)
        for node_id, class_type in unknown:
            print(f"  node {node_id} ({class_type})", file=sys.stderr)
        return EXIT_INVALID
    text = json.dumps(prompt, indent=2) + "\n"
    if args.output:
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cmd_convert_hypernet(args: argparse.Namespace) -> int:
    from ..hypernet.file_format import convert_hypernetwork_file

    if not args.source.is_file():
        print(f"error: {args.source}: file not found", file=sys.stderr)
        return EXIT_INVALID
    if args.destination.exists() and not args.overwrite:
        print(f"error: {args.destination} exists; add --overwrite to replace it", file=sys.stderr)
        return EXIT_INVALID
    try:
        written = convert_hypernetwork_file(args.source, args.destination, overwrite=args.overwrite)
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: cannot convert {args.source}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"wrote {written or args.destination}")
    return EXIT_OK


def _cmd_examples(args: argparse.Namespace) -> int:
    from .examples import write_examples

    base_dir = args.base_dir or Path(os.environ.get("HYPERNET_STUDIO_HOME", "."))
    written = write_examples(base_dir)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"all example inputs already exist under {Path(base_dir).resolve()}")
    return EXIT_OK


def _cmd_nodes(args: argparse.Namespace) -> int:
    from .nodeinfo import node_inputs

    registry = _registry()
    display_names = _display_names()
    listing = []
    for class_type in sorted(registry):
        cls = registry[class_type]
        inputs = []
        for info in node_inputs(cls).values():
            if info.section == "hidden":
                continue
            entry: dict[str, Any] = {"name": info.name, "type": info.type_name, "required": info.required}
            if info.combo_options is not None:
                entry["options"] = info.combo_options
            for key in ("default", "min", "max", "step", "tooltip"):
                if key in info.options:
                    entry[key] = info.options[key]
            inputs.append(entry)
        names = getattr(cls, "RETURN_NAMES", None) or getattr(cls, "RETURN_TYPES", ())
        outputs = [{"name": name, "type": type_} for name, type_ in zip(names, getattr(cls, "RETURN_TYPES", ()))]
        listing.append({"class_type": class_type, "display_name": display_names.get(class_type, class_type),
                        "category": getattr(cls, "CATEGORY", ""),
                        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)), "inputs": inputs,
                        "outputs": outputs})
    if args.json:
        print(json.dumps(listing, indent=2, default=str))
        return EXIT_OK
    for node in listing:
        flag = "  [output]" if node["output_node"] else ""
        shown = f" \"{node['display_name']}\"" if node["display_name"] != node["class_type"] else ""
        print(f"{node['class_type']}{shown}  ({node['category']}){flag}")
        for entry in node["inputs"]:
            detail = ""
            if "options" in entry:
                detail = f" one of {entry['options']}"
            if "default" in entry:
                detail += f" default={entry['default']!r}"
            if "min" in entry or "max" in entry:
                detail += f" range=[{entry.get('min', '')}, {entry.get('max', '')}]"
            optional = "" if entry["required"] else " (optional)"
            print(f"    in  {entry['name']}: {entry['type']}{optional}{detail}")
        for entry in node["outputs"]:
            print(f"    out {entry['name']}: {entry['type']}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from .executor import Executor
    from .headless_host import HEADLESS
    from .terminal import NodeReporter, pack_logs_reported
    from .workflow import WorkflowError

    if args.device == "cuda" and not _cuda_available():
        print("error: --device cuda: torch reports no usable CUDA device here (use --device cpu or auto)",
              file=sys.stderr)
        return EXIT_INVALID
    _configure_folders(args)
    HEADLESS.configure(device=args.device)
    if args.deterministic:
        _use_deterministic_kernels()
    _claim_process_gpu(HEADLESS)
    registry = _registry()
    try:
        prompt, ui_workflow = _load(args.workflow, args.overrides, registry)
    except WorkflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    quiet = args.quiet or HEADLESS.rank != 0  # under torchrun only rank 0 reports
    reporter = NodeReporter(prompt, quiet=quiet)
    executor = Executor(registry, event_callback=reporter, show_progress=not quiet and sys.stderr.isatty())
    extra_pnginfo = {"workflow": ui_workflow} if ui_workflow is not None else {}
    runs: Optional[dict] = prompt
    executed = cached = 0
    while runs is not None:
        with _previews_removed_afterwards(HEADLESS.temp_directory()), pack_logs_reported(reporter):
            result, code = _execute(executor, runs, extra_pnginfo, args.workflow)
        if result is None or HEADLESS.rank != 0:
            return code
        _report_run(result, registry, reporter)
        executed, cached = executed + len(result.executed), cached + len(result.cached)
        runs = _next_chunks(runs, result.ui, reporter, quiet) if args.all_chunks else None
        result = None  # its outputs hold this chunk's pictures: let them go before the next chunk loads
    if not quiet:
        print(f"done: {executed} node(s) run, {cached} cached, "
              f"{time.perf_counter() - reporter.started:.1f}s", file=sys.stderr)
    return EXIT_OK


def _report_run(result, registry: dict, reporter) -> None:
    """The files a run wrote and what its output nodes say (Save Hypernet's path, a spec's size)."""
    from .headless_host import HEADLESS

    for path in result.files:
        if HEADLESS.temp_directory() not in path.parents:
            reporter.wrote(path)
    for node_id, node_ui in result.ui.items():
        if not getattr(registry[reporter.prompt[node_id]["class_type"]], "OUTPUT_NODE", False):
            continue  # e.g. a tagger's per-image tags: too many lines for a terminal
        for text in node_ui.get("text") or []:
            print(f"{reporter.name(node_id)}: {text}")


def _next_chunks(prompt: dict, ui: dict, reporter, quiet: bool) -> Optional[dict]:
    """`run --all-chunks`: the prompt with each node that loaded a chunk and has chunks left
    (ui "chunk" = [index, count]) moved on to its next chunk, as the editor's increment does
    after a queue run; None when none has chunks left."""
    following = {node_id: {**node, "inputs": dict(node["inputs"])} for node_id, node in prompt.items()}
    moved = False
    for node_id, node_ui in ui.items():
        index, count = (list(node_ui.get("chunk") or ()) + [0, 0])[:2]
        if not quiet and node_ui.get("chunk"):
            print(f"{reporter.name(node_id)}: chunk {index + 1} of {count} done", file=sys.stderr)
        if index + 1 < count and isinstance(following[node_id]["inputs"].get("chunk"), int):
            following[node_id]["inputs"]["chunk"] = index + 1
            moved = True
    return following if moved else None


def _hand_over_to_torchrun(processes: int, argv: list[str]) -> int:
    """`run --nproc-per-node N`: the same command line on N processes, started by torchrun."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if processes < 1:
        print("error: --nproc-per-node must be at least 1", file=sys.stderr)
        return EXIT_INVALID
    package = __package__ or "hypernet_studio.runtime"
    try:
        torchrun(["--standalone", f"--nproc-per-node={processes}", "-m", package, *_without_nproc(argv)])
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        return next((code for code in codes if code in (EXIT_INVALID, EXIT_INTERRUPTED)), EXIT_EXECUTION)
    return EXIT_OK


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus --nproc-per-node (either spelling), for the processes torchrun starts."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            kept.append(arg)
    return kept


def _execute(executor, prompt: dict, extra_pnginfo: dict, workflow: Path):
    """(result, EXIT_OK) or (None, the exit code), with the error printed; Ctrl-C stops cleanly."""
    from .executor import NodeExecutionError
    from .headless_host import HEADLESS
    from .workflow_checks import PromptValidationError

    handler = _interrupt_handler(HEADLESS)
    # torchrun stops its processes with SIGTERM (and passes on a Ctrl-C): both stop after the step.
    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        return executor.run(prompt, extra_pnginfo=extra_pnginfo), EXIT_OK
    except PromptValidationError as exc:
        _print_issues(workflow, exc.issues)
        return None, EXIT_INVALID
    except NodeExecutionError as exc:
        message = str(exc.original).removeprefix(f"node {exc.node_id} ({exc.class_type}), ")
        print(f"error: node {exc.node_id} ({exc.class_type}) failed: {type(exc.original).__name__}: {message}",
              file=sys.stderr)
        return None, EXIT_EXECUTION
    except BaseException as exc:  # interrupts only: everything else is re-raised
        if HEADLESS.is_interrupt(exc):
            print("interrupted", file=sys.stderr)
            return None, EXIT_INTERRUPTED
        raise
    finally:
        for number, previous_handler in previous.items():
            signal.signal(number, previous_handler)


@contextlib.contextmanager
def _previews_removed_afterwards(temp_dir: Path):
    """Preview images are for looking at while a graph runs: the files a run adds to the temp
    folder go when it ends (ComfyUI empties its temp folder at start and exit)."""
    before = set(temp_dir.rglob("*")) if temp_dir.is_dir() else set()
    try:
        yield
    finally:
        if temp_dir.is_dir():
            for path in sorted(set(temp_dir.rglob("*")) - before, reverse=True):
                if path.is_file():
                    path.unlink(missing_ok=True)
                elif not any(path.iterdir()):
                    path.rmdir()


def _use_deterministic_kernels() -> None:
    """Every torch op with a deterministic kernel uses it (a warning names any without one), cuDNN
    picks no kernel by timing, and fp32 matmuls and convolutions stay fp32 (no TF32). Set before
    anything touches CUDA: cuBLAS reads its workspace setting when it starts."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _claim_process_gpu(headless) -> None:
    """Under torchrun, make this process's GPU (LOCAL_RANK) the current CUDA device before anything
    loads: a loader that touched CUDA first would leave its tensors and context on GPU 0, for every
    process. Alone, or on the CPU, there is nothing to do."""
    if headless.training_processes() is None:
        return
    device = headless.torch_device()
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _interrupt_handler(headless):
    """First Ctrl-C asks the run to stop cleanly (nodes see it); the second aborts at once.
    Under torchrun a process gets the terminal's signal and torchrun's copy of it, so there a
    repeat does not abort: torchrun itself kills processes that have not stopped in time."""
    alone = headless.training_processes() is None

    def handle(signum, frame):
        if headless.interrupt.is_set() and alone:
            raise KeyboardInterrupt
        if not headless.interrupt.is_set() and headless.rank == 0:
            print("\ninterrupt requested; stopping after the current step"
                  + (" (Ctrl-C again to abort)" if alone else ""), file=sys.stderr)
        headless.interrupt.set()
    return handle


if __name__ == "__main__":
    sys.exit(main())
