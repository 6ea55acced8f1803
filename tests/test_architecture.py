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


MAX_CLASS_LINES = 300


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> pack modules it imports, at the top or inside a function (both run eventually)."""
    modules = {_module_name(path): path for path in SOURCES}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(_tree(path)):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + (node.module.split(".") if node.module else []))
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            graph[name].update(c for c in candidates if c in modules and c != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    # A package's __init__ importing its own submodules is how a package exposes them, not a cycle.
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in _import_graph().items()}
    assert not _cycles(graph), _cycles(graph)


def test_the_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_file_name_appears_twice():
    names = [path.name for path in SOURCES if path.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def _classes(package: str):
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef):
                yield path, node


@pytest.mark.parametrize("package", PACKAGES)
def test_no_class_is_longer_than_the_limit(package):
    long = [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
            for path, node in _classes(package) if node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES]
    assert not long, long


def _self_attributes(function: ast.FunctionDef) -> set[str]:
    assigned = set()
    for node in ast.walk(function):
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for target in targets:
            for element in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if (isinstance(element, ast.Attribute) and isinstance(element.value, ast.Name)
                        and element.value.id == "self"):
                    assigned.add(element.attr)
    return assigned


def _undeclared_attributes(cls: ast.ClassDef) -> set[str]:
    """Attributes a method gives `self` that neither `__init__` nor the class body declares."""
    declared = {target.id for node in cls.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name)}
    methods = [node for node in cls.body if isinstance(node, ast.FunctionDef)]
    declared |= {attr for m in methods if m.name in ("__init__", "__post_init__") for attr in _self_attributes(m)}
    return {attr for m in methods if m.name not in ("__init__", "__post_init__")
            for attr in _self_attributes(m)} - declared


def test_every_library_object_declares_its_state_in_init():
    late = [f"{path.relative_to(REPO_ROOT)}:{cls.lineno} {cls.name}: {sorted(attrs)}"
            for path, cls in _classes("hypernet") if (attrs := _undeclared_attributes(cls))]
    assert not late, late


def test_the_state_check_sees_a_late_attribute():
    cls = ast.parse("class A:\n def __init__(self):\n  self.a = 1\n def go(self):\n  self.a, self.b = 2, 3\n").body[0]
    assert _undeclared_attributes(cls) == {"b"}


@pytest.mark.parametrize("package", ["hypernet", "hypernet/train", "hypernet/sd", "hypernet/preprocess",
                                     "hypernet/taggers", "hypernet/compare"])
def test_the_package_map_names_every_module(package):
    folder = REPO_ROOT / package
    docstring = ast.get_docstring(_tree(folder / "__init__.py")) or ""
    missing = [p.name for p in sorted(folder.glob("*.py")) if p.name != "__init__.py" and p.name not in docstring]
    assert not missing, f"{package}/__init__.py does not name {missing}"
