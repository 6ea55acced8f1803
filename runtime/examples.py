"""Example inputs for the shipped workflows, so each one runs headless from a fresh clone.

`hypernet-studio examples` writes them under the base directory:
- `input/train_example/`: small captioned pictures for workflows/train_hypernet.json;
- `input/dataset_raw/`: larger captioned pictures (one with alpha, one portrait) for
  workflows/dataset_prep.json;
- `models/hypernetworks/tiny_example.pt`: a seeded random hypernetwork sized for the tiny
  model, for workflows/txt2img_hypernet.json;
- `models/hypernetworks/tiny_sdxl_example.pt`: one with SDXL's widths (2048/640/1280), for
  workflows/txt2img_hypernet_sdxl.json (a narrow 1, 0.25, 1 structure keeps it at 24 MiB).
The pictures are simple coloured shapes drawn in code; existing files are never overwritten."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..hypernet.files import atomic_path, atomic_write_text

TINY_EXAMPLE_HYPERNET = "tiny_example.pt"
TINY_SDXL_EXAMPLE_HYPERNET = "tiny_sdxl_example.pt"
_SHAPES = [("red", "square"), ("blue", "circle"), ("green", "square"), ("yellow", "circle")]
_COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 60), "yellow": (230, 200, 40)}


def _draw(size: tuple[int, int], colour: str, shape: str, seed: int, alpha: bool = False):
    """A shape on a noisy background (noise gives the focal crop's edge detector something)."""
    import numpy as np
    from PIL import Image, ImageDraw

    width, height = size
    rng = np.random.default_rng(seed)
    background = (rng.random((height, width, 3)) * 80 + 120).astype("uint8")
    picture = Image.fromarray(background).convert("RGBA" if alpha else "RGB")
    if alpha:
        picture.putalpha(255)
    draw = ImageDraw.Draw(picture)
    side = min(width, height) // 2
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    fill = _COLOURS[colour] + ((255,) if alpha else ())
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=fill)
    if alpha:
        draw.rectangle((0, 0, width // 6, height), fill=(0, 0, 0, 0))
    return picture


def _save_picture(picture, path: Path) -> bool:
    if path.exists():
        return False
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return True


def write_examples(base_dir: Path) -> list[Path]:
    """Write every example input under `base_dir`; returns the files written (not those kept)."""
    base_dir = Path(base_dir)
    written: list[Path] = []

    def picture_with_caption(folder: Path, stem: str, picture, caption: str) -> None:
        if _save_picture(picture, folder / f"{stem}.png"):
            written.append(folder / f"{stem}.png")
        caption_path = folder / f"{stem}.txt"
        if not caption_path.exists():
            atomic_write_text(caption_path, caption)
            written.append(caption_path)

    train = base_dir / "input" / "train_example"
    for index, (colour, shape) in enumerate(_SHAPES):
        size = (64, 64 + 16 * (index % 2))  # two sizes, so aspect buckets are exercised
        picture_with_caption(train, f"img{index}", _draw(size, colour, shape, index), f"{colour}, {shape}")

    raw = base_dir / "input" / "dataset_raw"
    for index, (colour, shape) in enumerate(_SHAPES[:3]):
        size = [(640, 480), (480, 720), (600, 600)][index]
        picture_with_caption(raw, f"photo{index}", _draw(size, colour, shape, 10 + index, alpha=index == 0),
                             f"{colour} {shape}")

    hypernet_path = base_dir / "models" / "hypernetworks" / TINY_EXAMPLE_HYPERNET
    if not hypernet_path.exists():
        from ..hypernet.sd.headless import HeadlessModel
        from ..hypernet.sd.tiny import build_tiny_components

        widths = HeadlessModel(build_tiny_components()).attention_widths()
        hypernet_path.parent.mkdir(parents=True, exist_ok=True)
        make_random_hypernetwork(hypernet_path, sizes=widths, seed=0, name="tiny_example")
        written.append(hypernet_path)
    sdxl_path = base_dir / "models" / "hypernetworks" / TINY_SDXL_EXAMPLE_HYPERNET
    if not sdxl_path.exists():
        from ..hypernet.spec import FAMILY_SIZES

        # tiny-sdxl attends at exactly SDXL's widths, so its model need not be built for them.
        make_random_hypernetwork(sdxl_path, sizes=FAMILY_SIZES["SDXL"], layer_structure="1, 0.25, 1", seed=0,
                                 name="tiny_sdxl_example")
        written.append(sdxl_path)
    return written


def make_random_hypernetwork(path: Path, sizes: Sequence[int], layer_structure: str = "1, 2, 1",
                             activation: str = "relu", weight_init: str = "XavierNormal",
                             seed: int = 0, name: Optional[str] = None) -> Path:
    """Write a seeded random hypernetwork (e.g. for the example workflow on the tiny model).

    Xavier init makes its effect visible, unlike A1111's near-zero Normal default."""
    from ..hypernet.file_format import save_hypernetwork
    from ..hypernet.network import Hypernetwork
    from ..hypernet.spec import HypernetSpec

    spec = HypernetSpec(layer_structure=layer_structure, activation=activation,
                        weight_init=weight_init, sizes=list(sizes), init_seed=seed)
    hypernetwork = Hypernetwork.build(spec, name=name or Path(path).stem)
    return save_hypernetwork(hypernetwork, path)
