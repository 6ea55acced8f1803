"""The SDXL workflows run headless on tiny-sdxl (built-in) after `hypernet-studio examples`: train
(dataset -> Train Hypernet -> sample with the result) and txt2img with an SDXL hypernetwork file."""
from pathlib import Path

import numpy as np
from PIL import Image

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.runtime.cli import main

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_train_and_txt2img_sdxl_workflows_run_after_examples(tmp_path, capsys):
    assert main(["examples", "--base-dir", str(tmp_path)]) == 0
    example = load_hypernetwork(tmp_path / "models" / "hypernetworks" / "tiny_sdxl_example.pt")
    assert sorted(example.sizes) == [640, 1280, 2048]

    short = ["--set", "4.steps=3", "--set", "4.save_every=3", "--set", "4.preview_every=3", "--set", "9.steps=2"]
    assert main(["run", str(WORKFLOWS / "train_hypernet_sdxl.json"), "--base-dir", str(tmp_path), "--quiet",
                 *short]) == 0
    wrote = [Path(line[6:]) for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    trained = load_hypernetwork(tmp_path / "models" / "hypernetworks" / "example-sdxl-hypernet.pt")
    assert trained.step == 3 and sorted(trained.sizes) == [640, 1280, 2048]
    assert trained.sd_checkpoint_name == "tiny-sdxl (built-in)"
    assert any(p.name.startswith("hypernet_sdxl_trained_sample") for p in wrote)
    assert any(p.name == "example-sdxl-hypernet-3.png" for p in wrote), "a preview grid"

    images = {}
    for strength in (1.0, 0.0):
        assert main(["run", str(WORKFLOWS / "txt2img_hypernet_sdxl.json"), "--base-dir", str(tmp_path), "--quiet",
                     "--set", f"3.strength={strength}", "--set", "7.steps=2",
                     "--set", f"9.filename_prefix=sdxl_s{strength:g}"]) == 0
        (png,) = (tmp_path / "output").glob(f"sdxl_s{strength:g}_*.png")
        images[strength] = _pixels(png)
    assert images[1.0].shape == (64, 64, 3)
    assert (images[1.0] != images[0.0]).any(), "the SDXL hypernetwork changes the picture"
