"""Write the example inputs the shipped workflows read, for a ComfyUI-only install (no CLI).

From this folder, the custom-node folder inside ComfyUI, with ComfyUI's Python:

    python -m make_examples

writes ComfyUI/input/train_example (pictures and captions) and
ComfyUI/models/hypernetworks/tiny_example.pt, as `hypernet-studio examples --base-dir ComfyUI`
does. `--base-dir FOLDER` writes them under another ComfyUI folder. Existing files are kept."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional, Sequence

PACK_FOLDER = Path(__file__).resolve().parent
# custom_nodes/<this folder> -> the ComfyUI folder that holds input/ and models/
COMFYUI_FOLDER = PACK_FOLDER.parents[1]


def _import_pack() -> None:
    """This folder as the package `hypernet_studio` (its folder name need not be one), as ComfyUI
    loads it: a package spec on its __init__.py."""
    if "hypernet_studio" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("hypernet_studio", PACK_FOLDER / "__init__.py",
                                                  submodule_search_locations=[str(PACK_FOLDER)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the pack from {PACK_FOLDER}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["hypernet_studio"] = module
    spec.loader.exec_module(module)


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if "--base-dir" not in arguments:
        arguments += ["--base-dir", str(COMFYUI_FOLDER)]
    _import_pack()
    from hypernet_studio.runtime.cli import main as cli_main

    return cli_main(["examples", *arguments])


if __name__ == "__main__":
    sys.exit(main())
