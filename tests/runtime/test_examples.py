"""`hypernet-studio examples` gives every shipped workflow its inputs, and never overwrites."""
from pathlib import Path

from PIL import Image

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.runtime.cli import main
from hypernet_studio.runtime.examples import make_random_hypernetwork

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_examples_feed_the_hypernet_workflow_and_are_never_overwritten(tmp_path, capsys):
    assert main(["examples", "--base-dir", str(tmp_path)]) == 0
    train = sorted(p.name for p in (tmp_path / "input" / "train_example").iterdir())
    assert train == [f"img{i}.{ext}" for i in range(4) for ext in ("png", "txt")]
    assert (tmp_path / "input" / "train_example" / "img1.txt").read_text() == "blue, circle"
    sizes = {Image.open(tmp_path / "input" / "train_example" / f"img{i}.png").size for i in range(4)}
    assert sizes == {(64, 64), (64, 80)}
    assert Image.open(tmp_path / "input" / "dataset_raw" / "photo0.png").mode == "RGBA"
    hypernet = load_hypernetwork(tmp_path / "models" / "hypernetworks" / "tiny_example.pt")
    assert sorted(hypernet.sizes) == [32, 48, 64]

    caption = tmp_path / "input" / "train_example" / "img0.txt"
    caption.write_text("my own caption")
    capsys.readouterr()
    assert main(["examples", "--base-dir", str(tmp_path)]) == 0
    assert caption.read_text() == "my own caption"
    assert "already exist" in capsys.readouterr().out

    assert main(["run", str(REPO_ROOT / "workflows" / "txt2img_hypernet.json"), "--base-dir", str(tmp_path),
                 "--quiet"]) == 0
    assert list((tmp_path / "output").glob("hypernet_txt2img_*.png"))


def test_make_random_hypernetwork(tmp_path):
    path = make_random_hypernetwork(tmp_path / "ex.pt", sizes=[32, 64], seed=5)
    hn = load_hypernetwork(path)
    assert hn.sizes == [32, 64] and hn.spec.activation == "relu" and hn.name == "ex"
