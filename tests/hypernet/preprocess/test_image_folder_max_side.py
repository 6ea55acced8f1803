"""max_side: pictures larger than the bound are scaled down as they decode (aspect kept, never up,
EXIF orientation and alpha followed); smaller ones and max_side=0 are exactly the full-size load."""
import numpy as np
import pytest
from PIL import Image, ImageOps

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.preprocess import image_folder
from hypernet_studio.hypernet.preprocess.image_folder import (
    MAX_SIDE_DEFAULT,
    MAX_SIDE_MAX,
    check_max_side,
    decode_image,
    fitted_size,
    load_image_folder,
)


def _pattern(height, width, channels=3, seed=0):
    """Smooth gradients plus a little noise: photo-like, and different in every quadrant."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 9.0) * np.cos(y / 13.0), 255 * (x > y)]
    noise = np.random.default_rng(seed).normal(0, 6, (height, width, channels))
    return np.clip(np.stack(planes[:channels], -1) + noise, 0, 255).astype(np.uint8)


def _reference(path, size=None):
    """What the full-size load makes of `path` (the A1111 way), optionally Lanczos-resized."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255.0


@pytest.mark.parametrize("size,bound,expected", [
    ((3000, 2000), 1536, (1536, 1024)), ((2000, 3000), 1536, (1024, 1536)), ((2309, 1732), 1536, (1536, 1152)),
    ((1000, 10), 100, (100, 1)), ((4000, 1), 64, (64, 1)), ((1536, 900), 1536, None), ((100, 80), 1536, None),
    ((3000, 2000), 0, None)])
def test_fitted_size_fits_the_bound_keeps_the_aspect_and_never_upscales(size, bound, expected):
    fitted = fitted_size(*size, bound)
    assert fitted == expected
    if fitted is not None:
        assert max(fitted) == bound
        assert abs(fitted[0] / fitted[1] - size[0] / size[1]) <= size[0] / size[1] / min(fitted) + 1e-9


def test_a_large_png_is_lanczos_downscaled_to_fit_keeping_its_aspect(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(_pattern(300, 900)).save(path)
    rgb, alpha = decode_image(path, max_side=256)
    assert rgb.shape == (85, 256, 3) and rgb.dtype == np.float32 and alpha is None
    assert np.array_equal(rgb, _reference(path, (256, 85)))
    Image.fromarray(_pattern(900, 300)).save(tmp_path / "tall.png")
    tall, _ = decode_image(tmp_path / "tall.png", max_side=256)
    assert tall.shape == (256, 85, 3)


def test_a_large_jpeg_decodes_at_a_reduced_scale_and_matches_a_full_decode(tmp_path, monkeypatch):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_pattern(1600, 2400)).save(path, quality=92)
    decoded_sizes = []
    original = image_folder._resizable
    monkeypatch.setattr(image_folder, "_resizable", lambda image: decoded_sizes.append(image.size) or original(image))
    rgb, _ = decode_image(path, max_side=512)
    assert rgb.shape == (341, 512, 3)
    assert decoded_sizes == [(600, 400)], "the JPEG was decoded at 1/4 scale, not at full size"
    reference = _reference(path, (512, 341))
    psnr = 10 * np.log10(1.0 / float(((rgb - reference) ** 2).mean()))
    assert psnr > 38, psnr


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_exif_rotated_jpeg_is_downscaled_upright(tmp_path, orientation):
    stored = np.zeros((200, 400, 3), np.uint8)  # four distinct quadrants: any wrong turn or flip shows
    stored[:100, :200], stored[:100, 200:], stored[100:, :200], stored[100:, 200:] = (
        (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rot{orientation}.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    rgb, _ = decode_image(path, max_side=100)
    upright = _reference(path)
    assert upright.shape[:2] == ((400, 200) if orientation >= 5 else (200, 400))
    expected_shape = (100, 50) if orientation >= 5 else (50, 100)
    assert rgb.shape == (*expected_shape, 3)
    reference = _reference(path, expected_shape[::-1])
    assert float(np.abs(rgb - reference).mean()) < 0.02


def test_the_alpha_mask_is_resized_with_the_image_without_colour_bleeding(tmp_path):
    rgba = np.zeros((200, 400, 4), np.uint8)
    rgba[:, :200] = (0, 255, 0, 0)  # left half transparent (hidden green)
    rgba[:, 200:] = (255, 0, 0, 255)  # right half opaque red
    rgba[:20, 200:220, 3] = 128
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    rgb, alpha = decode_image(path, background=(0, 0, 255), max_side=100)
    assert rgb.shape == (50, 100, 3) and alpha.shape == (50, 100)
    alpha_reference = np.asarray(Image.fromarray(rgba[..., 3]).resize((100, 50), Image.Resampling.LANCZOS))
    assert np.abs(alpha * 255 - alpha_reference).max() <= 1
    assert alpha[:, :45].max() == 0.0 and alpha[25:, 55:].min() == 1.0
    assert rgb[..., 1].max() < 0.01, "the hidden colour of transparent pixels bled into the picture"
    assert np.allclose(rgb[:, :45], [0, 0, 1]) and np.allclose(rgb[25:, 55:], [1, 0, 0])


def test_sixteen_bit_and_palette_pictures_keep_their_meaning_when_downscaled(tmp_path):
    Image.fromarray(np.full((300, 200), 65535 // 2, np.uint16)).save(tmp_path / "g16.png")
    gray, _ = decode_image(tmp_path / "g16.png", max_side=100)
    assert gray.shape == (100, 67, 3) and np.allclose(gray, 0.5, atol=2e-3)
    palette = Image.new("P", (300, 300), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(0, (0, 0, 150, 300))
    palette.save(tmp_path / "p.png", transparency=0)
    rgb, alpha = decode_image(tmp_path / "p.png", background=(255, 255, 255), max_side=100)
    assert rgb.shape == (100, 100, 3) and alpha[:, :45].max() == 0.0 and alpha[:, 55:].min() == 1.0
    assert ((alpha > 0.01) & (alpha < 0.99)).any(), "resampled as RGBA with Lanczos, not palette nearest"
    assert np.allclose(rgb[:, 55:], [0, 1, 0]) and np.allclose(rgb[:, :45], [1, 1, 1])


def _fixtures(folder):
    """Small pictures of every kind the loader converts, including a rotated JPEG."""
    Image.fromarray(_pattern(60, 80)).save(folder / "rgb.png")
    Image.fromarray(_pattern(60, 80, 4), "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).save(folder / "g16.png")
    Image.fromarray(_pattern(60, 80)).convert("P").save(folder / "palette.gif")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_pattern(60, 80)).save(folder / "rotated.jpg", exif=exif.tobytes())
    return sorted(folder.iterdir())


@pytest.mark.parametrize("bound", [80, MAX_SIDE_DEFAULT])
def test_pictures_that_fit_are_byte_identical_to_the_full_size_load(tmp_path, bound):
    for path in _fixtures(tmp_path):
        full_rgb, full_alpha = decode_image(path, max_side=0)
        rgb, alpha = decode_image(path, max_side=bound)
        assert rgb.dtype == full_rgb.dtype and rgb.tobytes() == full_rgb.tobytes(), path.name
        assert (alpha is None) == (full_alpha is None), path.name
        assert alpha is None or alpha.tobytes() == full_alpha.tobytes(), path.name


def test_max_side_zero_is_the_old_full_size_load(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_pattern(1000, 1800)).save(tmp_path / "big.jpg", exif=exif.tobytes(), quality=90)
    rgb, _ = decode_image(tmp_path / "big.jpg", max_side=0)
    assert rgb.shape == (1800, 1000, 3)
    assert np.array_equal(rgb, _reference(tmp_path / "big.jpg"))
    (item,) = load_image_folder(tmp_path).images  # the library's default is full size too
    assert np.array_equal(item.rgb, rgb)
    (small,) = load_image_folder(tmp_path, max_side=900).images
    assert small.rgb.shape == (900, 500, 3)


@pytest.mark.parametrize("value,expected", [(0, 0), (64, 64), (1536, 1536), (1536.0, 1536), ("2048", 2048),
                                            (MAX_SIDE_MAX, MAX_SIDE_MAX)])
def test_check_max_side_accepts_zero_and_whole_pixel_counts(value, expected):
    assert check_max_side(value) == expected


@pytest.mark.parametrize("value,reason", [(-1, "0 \\(keep full size\\)"), (1, "at least 64"), (63, "at least 64"),
                                          (MAX_SIDE_MAX + 1, f"at most {MAX_SIDE_MAX}"), (2.5, "whole number"),
                                          ("big", "whole number"), (True, "whole number"), (None, "whole number")])
def test_check_max_side_refuses_bad_values_naming_the_input(value, reason):
    with pytest.raises(InputError, match=rf"^input 'max_side': .*{reason}") as info:
        check_max_side(value)
    assert info.value.input_name == "max_side"


def test_a_bad_max_side_is_refused_before_any_file_is_read(tmp_path, monkeypatch):
    Image.fromarray(_pattern(8, 8)).save(tmp_path / "a.png")
    read = []
    monkeypatch.setattr(image_folder, "decode_image", lambda *a, **k: read.append(a))
    with pytest.raises(InputError, match="max_side"):
        load_image_folder(tmp_path, max_side=-5)
    assert read == []
