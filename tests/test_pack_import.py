"""The pack imports without ComfyUI, the way ComfyUI loads it, and stays cheap; the library under it
imports with no side effects."""
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_imports_like_comfyui_under_an_arbitrary_name_without_heavy_modules():
    script = textwrap.dedent(f"""
        import importlib.util, sys
        root = {str(REPO_ROOT)!r}
        name = root.replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(name, root + "/__init__.py",
                                                      submodule_search_locations=[root])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        assert module.WEB_DIRECTORY == "./web"
        assert isinstance(module.NODE_CLASS_MAPPINGS, dict)
        assert set(module.NODE_DISPLAY_NAME_MAPPINGS) <= set(module.NODE_CLASS_MAPPINGS)
        heavy = [m for m in ("diffusers", "transformers", "cv2", "onnxruntime") if m in sys.modules]
        assert not heavy, heavy
        for cls in module.NODE_CLASS_MAPPINGS.values():
            cls.INPUT_TYPES()
        heavy = [m for m in ("diffusers", "transformers", "cv2", "onnxruntime") if m in sys.modules]
        assert not heavy, heavy
        print("OK", len(module.NODE_CLASS_MAPPINGS))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")


def test_importing_the_library_imports_no_node_or_runtime_module_and_installs_no_host():
    script = textwrap.dedent(f"""
        import importlib.util, sys
        root = {str(REPO_ROOT)!r}
        spec = importlib.util.spec_from_file_location("hypernet_studio", root + "/__init__.py",
                                                      submodule_search_locations=[root])
        module = importlib.util.module_from_spec(spec)
        sys.modules["hypernet_studio"] = module
        spec.loader.exec_module(module)
        import hypernet_studio.hypernet.file_format
        loaded = [m for m in sys.modules if m.startswith(("hypernet_studio.nodes", "hypernet_studio.runtime"))]
        assert not loaded, sorted(loaded)
        from hypernet_studio.nodes.host import HOST
        try:
            HOST.installed
        except RuntimeError as exc:
            print("OK", exc)
        else:
            print("a host is installed:", HOST.installed)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK no host installed"), result.stdout


def test_node_ids_are_prefixed_and_categorised():
    import hypernet_studio

    for node_id, cls in hypernet_studio.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("HN_"), node_id
        assert cls.CATEGORY.startswith("hypernetwork/"), node_id
        assert node_id in hypernet_studio.NODE_DISPLAY_NAME_MAPPINGS
