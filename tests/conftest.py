"""Make the repository importable as `hypernet_studio` even without `pip install`,
the way ComfyUI loads it: a package spec on the root `__init__.py`."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_pack() -> None:
    existing = sys.modules.get("hypernet_studio")
    if existing is not None:
        return
    try:
        import hypernet_studio  # noqa: F401  (installed, e.g. `pip install -e .`)
        if Path(hypernet_studio.__file__).resolve().parent == REPO_ROOT:
            return
        # Another checkout is installed: forget it and its submodules, or `from .nodes import`
        # below would reuse that checkout's modules.
        for name in [name for name in sys.modules if name == "hypernet_studio" or name.startswith("hypernet_studio.")]:
            del sys.modules[name]
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location(
        "hypernet_studio", REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["hypernet_studio"] = module
    spec.loader.exec_module(module)


_load_pack()
# The nodes the tests call run against the headless host, as in the runtime (importing the pack
# installs none).
sys.modules["hypernet_studio"].install_host()


class _RepositoryRootIsAFolder:
    """The repository root is also the ComfyUI custom-node folder, so it holds an `__init__.py`.
    Pytest would collect it as a package and import that file under the clone folder's name,
    which fails for a folder named like `hypernet-studio` (not an identifier) and imports a
    second copy of the pack otherwise. The tests use the `hypernet_studio` package instead."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if path == REPO_ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    # Registered as a plugin, not a conftest hook: the root folder is collected before any
    # conftest below it applies.
    config.pluginmanager.register(_RepositoryRootIsAFolder(), "hypernet-studio-root-folder")


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """The tests run tiny torch ops that gain nothing from intra-op threads, while OpenMP's
    spinning threads make them many times slower on a busy 2-core machine."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def headless_dirs(tmp_path):
    """Point the headless adapter at fresh input/output/models/temp folders under tmp_path."""
    from hypernet_studio.runtime.headless_host import HEADLESS

    saved = {k: getattr(HEADLESS, k) for k in
             ("base_dir", "input_dir", "output_dir", "temp_dir", "models_dir")}
    HEADLESS.configure(base_dir=tmp_path, input_dir=None, output_dir=None,
                                     temp_dir=None, models_dir=None)
    for sub in ("input", "output", "temp", "models"):
        (tmp_path / sub).mkdir(exist_ok=True)
    yield tmp_path
    for key, value in saved.items():
        setattr(HEADLESS, key, value)


@pytest.fixture
def as_node_7(monkeypatch):
    """Run a node function as the executor would run node 7 (errors name "node 7 (HN_...)")."""
    from hypernet_studio.runtime.headless_host import HEADLESS

    monkeypatch.setattr(HEADLESS, "running_node_id", "7")
    return "7"


@pytest.fixture(scope="session")
def pack_environment(tmp_path_factory):
    """Environment for subprocesses that `import hypernet_studio` from this checkout, whatever
    the clone's folder is called (a folder holding a `hypernet_studio` link to it goes first
    on PYTHONPATH), with one OpenMP thread per process as torchrun would set."""
    import os

    parent = tmp_path_factory.mktemp("pack-link")
    (parent / "hypernet_studio").symlink_to(REPO_ROOT, target_is_directory=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(parent), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="session")
def torchrun(pack_environment):
    """Start `python -m torch.distributed.run --standalone --nproc-per-node N ARGS...` and wait."""
    import subprocess

    def launch(*args: str, processes: int = 2, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO_ROOT,
                              env=pack_environment)

    return launch
