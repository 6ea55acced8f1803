"""The layout's rules, checked on the source: who imports whom, how long functions and node
classes are, what library messages may say, and that comments point only inside the repository."""
import ast
import re
from pathlib import Path

import pytest

from hypernet_studio.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hypernet", "nodes", "runtime")
SOURCES = sorted(p for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py"))
COMFY_MODULES = {"comfy", "folder_paths", "server", "comfy_execution", "nodes", "execution"}
MAX_FUNCTION_LINES = 60
MAX_NODE_CLASS_LINES = 40
SECTION_SIGN, OUTSIDE_FOLDER = "\u00a7", "../" + "shared"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported_packages(path: Path) -> set[str]:
    """Top-level pack folders (hypernet, nodes, runtime) a module imports, and absolute modules."""
    package_parts = path.relative_to(REPO_ROOT).parts[:-1]
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package_parts[:len(package_parts) - node.level + 1]
            target = list(base) + (node.module.split(".") if node.module else [])
            found.add(target[0] if target else "<root>")
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add("abs:" + node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update("abs:" + alias.name.split(".")[0] for alias in node.names)
    return found


@pytest.mark.parametrize("package,forbidden", [("hypernet", {"nodes", "runtime", "<root>"}),
                                               ("nodes", {"runtime", "<root>"})])
def test_layers_import_only_downwards(package, forbidden):
    for path in (REPO_ROOT / package).rglob("*.py"):
        imported = _imported_packages(path)
        assert not imported & forbidden, f"{path.relative_to(REPO_ROOT)} imports {imported & forbidden}"
        comfy = {name[4:] for name in imported if name.startswith("abs:")} & COMFY_MODULES
        assert not comfy, f"{path.relative_to(REPO_ROOT)} imports ComfyUI modules {comfy} directly"


def test_no_function_is_longer_than_the_limit():
    long = [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
            for path in SOURCES for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def test_node_classes_stay_short():
    import inspect

    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        lines = len(inspect.getsource(cls).splitlines())
        assert lines <= MAX_NODE_CLASS_LINES, f"{node_id} ({cls.__name__}) has {lines} lines"


def test_library_messages_never_name_a_node():
    names = set(NODE_CLASS_MAPPINGS) | set(NODE_DISPLAY_NAME_MAPPINGS.values())
    names |= {"Train Hypernet", "Load Images", "Auto Crop", "Hypernet Spec", "Apply Hypernet", "Save Hypernet"}
    offending = []
    for path in (REPO_ROOT / "hypernet").rglob("*.py"):
        tree = _tree(path)
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                offending += [f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {name}"
                              for name in names if name in node.value]
    assert not offending, offending


def test_no_comment_points_outside_the_repository():
    text_files = [*SOURCES, *(REPO_ROOT / "tests").rglob("*.py"), *(REPO_ROOT / "bench").rglob("*.py"),
                  *(REPO_ROOT / "web").rglob("*.js"), REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.md")]
    for path in text_files:
        text = path.read_text(encoding="utf-8")
        assert SECTION_SIGN not in text, f"{path.relative_to(REPO_ROOT)} refers to a section of an outside document"
        assert OUTSIDE_FOLDER not in text, f"{path.relative_to(REPO_ROOT)} points outside the repository"
        for reference in re.findall(r"\bdocs/[\w./-]+\.md", text):
            assert (REPO_ROOT / reference).is_file(), f"{path.relative_to(REPO_ROOT)} points to missing {reference}"
