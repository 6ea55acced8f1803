"""Issue 17: a ComfyUI-only user (no CLI installed) makes the example inputs with ComfyUI's
Python from the custom-node folder: `python -m make_examples`."""
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_python_m_make_examples_from_the_custom_node_folder_writes_the_inputs(tmp_path):
    comfyui = tmp_path / "ComfyUI"
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "make_examples", "--base-dir", str(comfyui)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr
    assert (comfyui / "models" / "hypernetworks" / "tiny_example.pt").is_file()
    assert {p.suffix for p in (comfyui / "input" / "train_example").iterdir()} == {".png", ".txt"}
    assert f"wrote {comfyui / 'models' / 'hypernetworks' / 'tiny_example.pt'}" in result.stdout


def test_the_default_base_folder_is_the_comfyui_folder_two_levels_up():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_examples_under_test", REPO_ROOT / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.COMFYUI_FOLDER == REPO_ROOT.parents[1]
