"""The entry point, loaded (in a fresh interpreter) exactly as ComfyUI's nodes.load_custom_node loads
a custom-node folder: loading it imports nothing of the pack; ComfyUI's reads of WEB_DIRECTORY and
the node mappings (hasattr, then getattr) register every node and install the host once; a failure
while the nodes load is reported, not taken for a pack without nodes."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from hypernet_studio.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from hypernet_studio.nodes.host import OUR_MODEL_FOLDERS, TRAINING_FOLDER

REPO_ROOT = Path(__file__).resolve().parents[1]
LOAD_LIKE_COMFYUI = textwrap.dedent("""
    import importlib.util, json, os, sys
    module_path = sys.argv[1]
    sys_module_name = module_path.replace(".", "_x_")
    module_spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[sys_module_name] = module
    module_spec.loader.exec_module(module)
    imported_by_loading = sorted(m for m in sys.modules if m.startswith(sys_module_name + "."))

    web = None
    if hasattr(module, "WEB_DIRECTORY") and getattr(module, "WEB_DIRECTORY") is not None:
        web = os.path.isdir(os.path.join(module_path, getattr(module, "WEB_DIRECTORY")))
    classes, names = {}, {}
    if hasattr(module, "NODE_CLASS_MAPPINGS") and getattr(module, "NODE_CLASS_MAPPINGS") is not None:
        classes.update(module.NODE_CLASS_MAPPINGS)
        if hasattr(module, "NODE_DISPLAY_NAME_MAPPINGS") and getattr(module, "NODE_DISPLAY_NAME_MAPPINGS") is not None:
            names.update(module.NODE_DISPLAY_NAME_MAPPINGS)

    host = sys.modules[sys_module_name + ".nodes.host"].HOST
    installed = type(host.installed).__name__
    sentinel = object()
    host.install(sentinel)  # a second read of the mappings must not install the host again
    module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS
    folder_paths = sys.modules.get("folder_paths")
    print(json.dumps({
        "imported_by_loading": imported_by_loading, "web_directory_found": web,
        "classes": sorted(classes), "display_names": names, "host": installed,
        "host_installed_once": host.installed is sentinel,
        "runtime_imported": any(m.startswith(sys_module_name + ".runtime") for m in sys.modules),
        "comfy_folders": folder_paths and {k: v[0] for k, v in folder_paths.folder_names_and_paths.items()},
    }))
""")

# Just the parts of ComfyUI that comfy_importable() finds and ComfyHost.register_model_folders uses.
FAKE_FOLDER_PATHS = textwrap.dedent("""
    import os
    base = os.path.dirname(os.path.abspath(__file__))
    models_dir = os.path.join(base, "models")
    folder_names_and_paths = {"hypernetworks": ([os.path.join(models_dir, "hypernetworks")], set())}

    def get_output_directory():
        return os.path.join(base, "output")

    def add_model_folder_path(kind, path, is_default=False):
        folder_names_and_paths.setdefault(kind, ([], set()))[0].append(path)
""")


def _load_like_comfyui(tmp_path, comfyui_importable: bool) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if comfyui_importable:
        comfy = tmp_path / "comfyui"
        (comfy / "comfy").mkdir(parents=True)
        (comfy / "folder_paths.py").write_text(FAKE_FOLDER_PATHS)
        (comfy / "comfy" / "__init__.py").write_text("")
        (comfy / "comfy" / "model_management.py").write_text("")
        env["PYTHONPATH"] = str(comfy)
    result = subprocess.run([sys.executable, "-c", LOAD_LIKE_COMFYUI, str(REPO_ROOT)], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("comfyui_importable", [False, True], ids=["headless", "inside-comfyui"])
def test_loading_like_comfyui_registers_every_node_and_installs_the_host_once(tmp_path, comfyui_importable):
    loaded = _load_like_comfyui(tmp_path, comfyui_importable)
    assert loaded["imported_by_loading"] == [], "loading the entry point alone must import nothing of the pack"
    assert loaded["web_directory_found"] is True
    assert loaded["classes"] == sorted(NODE_CLASS_MAPPINGS)
    assert loaded["display_names"] == NODE_DISPLAY_NAME_MAPPINGS
    assert loaded["host_installed_once"]
    if comfyui_importable:
        assert loaded["host"] == "ComfyHost"
        assert not loaded["runtime_imported"], "inside ComfyUI the headless runtime stays unloaded"
        folders = loaded["comfy_folders"]
        assert set(OUR_MODEL_FOLDERS) <= set(folders)
        assert folders["hypernetworks"][-1] == str(tmp_path / "comfyui" / "output" / TRAINING_FOLDER)
    else:
        assert loaded["host"] == "HeadlessHost"
        assert loaded["comfy_folders"] is None


def test_an_attribute_error_while_loading_the_nodes_is_not_taken_for_missing_mappings(monkeypatch):
    """ComfyUI asks hasattr(pack, "NODE_CLASS_MAPPINGS"): an AttributeError raised while the
    nodes load would read as "no mappings" and the pack would be skipped without a word."""
    name = "hypernet_studio_broken_copy"
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py")
    pack = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, pack)
    spec.loader.exec_module(pack)
    host = types.ModuleType(name + ".nodes.host")
    host.HOST = None
    host.comfy_importable = lambda: types.no_such_attribute
    monkeypatch.setitem(sys.modules, name + ".nodes", types.ModuleType(name + ".nodes"))
    monkeypatch.setitem(sys.modules, name + ".nodes.host", host)
    with pytest.raises(ImportError, match="no_such_attribute"):
        hasattr(pack, "NODE_CLASS_MAPPINGS")
