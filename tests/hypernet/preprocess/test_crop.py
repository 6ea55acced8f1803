"""Crop geometry against the formulas of docs/preprocessing.md, on synthetic images."""
import math

import numpy as np
import pytest
from PIL import Image

from hypernet_studio.hypernet.preprocess.crop import (
    CropSettings,
    auto_sized_plan,
    center_plan,
    crop_dataset,
    fill_plan,
    focal_plan,
    render_plan,
    split_plans,
)
from hypernet_studio.hypernet.preprocess.focal import FocalWeights

EDGES_ONLY = FocalWeights(face=0.0, entropy=0.0, edges=0.5)
ENTROPY_ONLY = FocalWeights(face=0.0, entropy=0.15, edges=0.0)
NOTHING_FOUND = FocalWeights(face=0.0, entropy=0.0, edges=0.5)  # used on flat images: no corners


def _rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.dstack([gray.astype(np.uint8)] * 3))


def _reference_split_starts(long_side, short_side, target_long, target_short, overlap):
    """The spec's split formula, written out independently."""
    resized = math.floor(long_side * target_short / short_side)
    n = math.ceil((resized - target_long * overlap) / (target_long * (1 - overlap)))
    step = (resized - target_long) / (n - 1)
    return resized, [int(i * step) for i in range(n)]


def test_split_512x1536_gives_four_tiles_at_the_spec_offsets():
    resized, starts = _reference_split_starts(1536, 512, 512, 512, 0.2)
    assert starts == [0, 341, 682, 1024]  # the spec's worked example
    plans = split_plans(512, 1536, 512, 512, threshold=0.5, overlap=0.2)
    assert [p.box for p in plans] == [(0.0, float(s), 512.0, float(s + 512)) for s in starts]
    assert all(p.canvas == (512, 512) for p in plans)
    landscape = split_plans(1536, 512, 512, 512)
    assert [p.box[0] for p in landscape] == [float(s) for s in starts]


def test_split_maps_tiles_back_to_source_pixels_and_renders_them():
    # 256x768 source to 128x128: short side halves, tiles start at 0/170/341/512 on the resized image.
    resized, starts = _reference_split_starts(768, 256, 128, 128, 0.2)
    plans = split_plans(256, 768, 128, 128)
    assert [p.box[1] for p in plans] == [s * 768 / resized for s in starts]
    rows = np.repeat(np.arange(768, dtype=np.float64)[:, None] / 3, 256, axis=1)  # value = row / 3
    tile = np.asarray(render_plan(_rgb(rows), plans[2]))[..., 0].astype(float)
    expected_rows = (np.arange(128) + 0.5) * 2 + starts[2] * 2 - 0.5  # source row at each tile row centre
    assert np.abs(tile[:, 64] - expected_rows / 3).max() <= 1.5


def test_split_skips_images_that_are_not_elongated_enough_and_guards_single_tiles():
    assert split_plans(512, 700, 512, 512, threshold=0.5) is None  # ratio 0.73 > 0.5
    # 700x701 with a high threshold/overlap: n = 1, where A1111 divides by zero.
    plans = split_plans(700, 701, 512, 512, threshold=1.0, overlap=0.9)
    assert len(plans) == 1 and plans[0].method == "center"


def test_center_and_fill_plans():
    plan = center_plan(300, 200, 100, 100)
    assert plan.box == (50.0, 0.0, 250.0, 200.0) and plan.region_size == (100, 100)
    fill = fill_plan(200, 100, 100, 100)
    assert fill.region_size == (100, 50) and fill.offset == (0, 25)
    gradient = np.repeat(np.linspace(0, 255, 100)[:, None], 200, axis=1)
    out = np.asarray(render_plan(_rgb(gradient), fill))[..., 0]
    assert out.shape == (100, 100)
    assert (out[:25] == out[25]).all() and (out[75:] == out[74]).all()  # edge rows replicated


def test_focal_crop_centres_on_a_bright_disc_on_noise():
    rng = np.random.default_rng(0)
    gray = 100 + rng.random((256, 1024)) * 8
    yy, xx = np.mgrid[:256, :1024]
    gray[(xx - 800) ** 2 + (yy - 128) ** 2 < 20 ** 2] = 255
    plan, result, _ = focal_plan(_rgb(gray), CropSettings(width=256, height=256, weights=EDGES_ONLY))
    assert abs(result.point[0] - 800) <= 4 and abs(result.point[1] - 128) <= 4
    assert plan.box == (float(result.point[0] - 128), 0.0, float(result.point[0] + 128), 256.0)


def test_focal_crop_finds_an_edge_rich_patch():
    gray = np.full((256, 1024), 128.0)
    checker = (np.indices((200, 200)).sum(axis=0) // 25) % 2 * 255
    gray[28:228, 100:300] = checker
    plan, result, _ = focal_plan(_rgb(gray), CropSettings(width=256, height=256, weights=EDGES_ONLY))
    assert abs(result.point[0] - 200) <= 8
    assert plan.box[0] <= 100 - 28 + 8 and plan.box[2] >= 300 - 8


def test_shannon_entropy_picks_the_noisy_window_exactly():
    rng = np.random.default_rng(1)
    gray = np.full((256, 1024), 128.0)
    gray[:, 700:956] = rng.integers(0, 256, (256, 256))
    plan, result, _ = focal_plan(_rgb(gray), CropSettings(width=256, height=256, weights=ENTROPY_ONLY))
    assert result.point == (828, 128)
    assert plan.box == (700.0, 0.0, 956.0, 256.0)


def test_no_points_falls_back_to_the_centre_or_a1111s_top_left():
    flat = _rgb(np.full((300, 600), 90.0))
    ours, result, _ = focal_plan(flat, CropSettings(width=100, height=100, weights=NOTHING_FOUND))
    assert result.used_fallback and ours.scaled_box == (50, 0, 150, 100)  # scaled 200x100, centred
    theirs, _, _ = focal_plan(flat, CropSettings(width=100, height=100, weights=NOTHING_FOUND, a1111_compat=True))
    assert theirs.scaled_box == (0, 0, 100, 100)


def test_a1111_scale_rule_pads_black_bars_and_ours_covers():
    # 600x800 to 512x768: A1111 scales by 512/600 to 512x682, so a low focal point gives y1 = -86.
    gray = np.full((800, 600), 128.0)
    checker = 40 + (np.indices((120, 120)).sum(axis=0) // 15) % 2 * 215
    gray[560:680, 240:360] = checker
    settings = CropSettings(width=512, height=768, weights=EDGES_ONLY, a1111_compat=True)
    plan, result, _ = focal_plan(_rgb(gray), settings)
    assert plan.scaled_size == (512, int(800 * 512 / 600)) == (512, 682)
    assert result.point[1] >= 384
    assert plan.scaled_box == (0, -86, 512, 682)
    out = np.asarray(render_plan(_rgb(gray), plan))
    assert out.shape == (768, 512, 3) and out[:86].max() == 0 and out[86:].min() > 0
    mask = np.asarray(render_plan(Image.fromarray(np.zeros((800, 600), np.float32), "F"), plan, pad_value=1.0))
    assert (mask[:86] == 1).all() and np.abs(mask[86:]).max() < 1e-6
    ours, _, _ = focal_plan(_rgb(gray), CropSettings(width=512, height=768, weights=EDGES_ONLY))
    x0, y0, x1, y1 = ours.box
    assert x0 >= 0 and y0 >= 0 and x1 <= 600 + 1e-6 and y1 <= 800 + 1e-6
    assert ours.region_size == ours.canvas == (512, 768) and ours.offset == (0, 0)


def _reference_auto_size(iw, ih, sides, min_area=4096, max_area=409600, threshold=0.1):
    best = None
    for w in sides:
        for h in sides:
            r = (iw / ih) / (w / h)
            err = 1 - min(r, 1 / r)
            if min_area <= w * h <= max_area and err <= threshold:
                key = (w * h, -err)
                if best is None or key > best[0]:
                    best = (key, (w, h))
    return best[1]


def test_auto_sized_crop_matches_the_spec_examples():
    assert auto_sized_plan(1000, 1000, CropSettings()).canvas == (640, 640)
    plan = auto_sized_plan(1200, 800, CropSettings())
    assert plan.canvas == (768, 512) == _reference_auto_size(1200, 800, range(384, 769, 64))
    assert plan.box == (0.0, 0.0, 1200.0, 800.0)
    odd = CropSettings(auto_min_dim=400, a1111_compat=True)
    assert auto_sized_plan(1000, 700, odd).canvas == _reference_auto_size(1000, 700, range(400, 769, 64))
    snapped = auto_sized_plan(1000, 700, CropSettings(auto_min_dim=400)).canvas
    assert snapped[0] % 64 == 0 and snapped[1] % 64 == 0
    assert auto_sized_plan(4000, 500, CropSettings()) is None  # no size within the error threshold


def test_captions_masks_and_stems_follow_every_tile_and_skip():
    image = _rgb(np.zeros((768, 256)))
    mask = Image.fromarray(np.linspace(0, 1, 768 * 256, dtype=np.float32).reshape(768, 256), "F")
    wide = _rgb(np.zeros((100, 2000)))
    out = crop_dataset([image, wide], [mask, None], ["tall caption", "wide caption"], ["tall", "wide"],
                       CropSettings(method="split", width=128, height=128))
    n_tall = len(split_plans(256, 768, 128, 128))
    assert out.captions == ["tall caption"] * n_tall + ["wide caption"] * (len(out.images) - n_tall)
    assert out.stems[:n_tall] == [f"tall-{i}" for i in range(n_tall)]
    assert out.masks[n_tall] is None and all(m.size == (128, 128) for m in out.masks[:n_tall])
    assert np.asarray(out.masks[0]).mean() < np.asarray(out.masks[n_tall - 1]).mean()  # tile order kept
    assert [b["source"] for b in out.boxes] == [0] * n_tall + [1] * (len(out.images) - n_tall)
    skipped = crop_dataset([wide], [None], ["c"], ["wide"], CropSettings(method="auto_sized"))
    assert skipped.images == [] and "wide" in skipped.warnings[0]


def test_debug_images_are_produced_on_request():
    out = crop_dataset([_rgb(np.full((100, 300), 50.0))], [None], [""], ["a"],
                       CropSettings(method="focal", width=64, height=64, debug=True, weights=EDGES_ONLY))
    assert len(out.debug_images) == 1 and out.debug_images[0].mode == "RGB"
    with pytest.raises(ValueError, match="crop method"):
        crop_dataset([_rgb(np.zeros((8, 8)))], [None], [""], ["a"], CropSettings(method="nope"))
