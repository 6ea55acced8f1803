"""Folder loading: order, pixel conversions, captions, repeats and the bad-file corpus."""
import io
import logging

import numpy as np
import pytest
from PIL import Image

from hypernet_studio.hypernet.preprocess.image_folder import (
    decode_image,
    folder_fingerprint,
    kohya_repeats,
    load_image_folder,
    natural_key,
    parse_color,
)


def _save(path, array, mode=None, **params):
    Image.fromarray(array, mode).save(path, **params)
    return path


def test_natural_sort_orders_digit_runs_numerically():
    names = ["img10.png", "img2.png", "Img1.png", "a/img3.png"]
    assert sorted(names, key=natural_key) == ["a/img3.png", "Img1.png", "img2.png", "img10.png"]


def test_folder_loads_in_natural_order_with_captions_offset_and_limit(tmp_path):
    for i in (10, 2, 1):
        _save(tmp_path / f"img{i}.png", np.full((8, 8, 3), i, np.uint8))
    (tmp_path / "img2.txt").write_text("\ufeff a red cube \n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored")
    result = load_image_folder(tmp_path)
    assert [item.stem for item in result.images] == ["img1", "img2", "img10"]
    assert [item.caption for item in result.images] == ["", "a red cube", ""]
    assert result.images[2].rgb[0, 0, 0] == pytest.approx(10 / 255)
    window = load_image_folder(tmp_path, offset=1, limit=1)
    assert [item.stem for item in window.images] == ["img2"]
    custom = load_image_folder(tmp_path, caption_extension=".caption")
    assert all(item.caption == "" for item in custom.images)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 20, 3), np.uint8)
    array[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    _save(tmp_path / "rot.jpg", array, exif=exif.tobytes(), quality=95)
    rgb, _ = decode_image(tmp_path / "rot.jpg")
    assert rgb.shape == (20, 10, 3)
    # After a clockwise turn the white (stored left) half is on top.
    assert rgb[:10].mean() > 0.9 and rgb[10:].mean() < 0.1


def test_alpha_is_composited_on_the_background_and_kept(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere
    rgba[:, :2, 3] = 255  # left half opaque, right half fully transparent
    rgba[0, 3, 3] = 128
    _save(tmp_path / "a.png", rgba, "RGBA")
    rgb, alpha = decode_image(tmp_path / "a.png", background=(0, 0, 255))
    assert alpha[0, 0] == 1.0 and alpha[0, 2] == 0.0
    assert rgb[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert rgb[0, 2].tolist() == [0.0, 0.0, 1.0]  # background colour where transparent
    a = 128 / 255
    assert rgb[0, 3] == pytest.approx([a, 0.0, 1 - a], abs=1e-6)


def test_sixteen_bit_palette_cmyk_gif_and_tiff(tmp_path):
    gray16 = np.full((4, 4), 65535 // 2, np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    rgb, alpha = decode_image(tmp_path / "g16.png")
    assert alpha is None and rgb[0, 0, 0] == pytest.approx(0.5, abs=1e-3)

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 0
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "p.png", transparency=0)
    rgb, alpha = decode_image(tmp_path / "p.png", background=(255, 255, 255))
    assert rgb[1, 1].tolist() == [0.0, 1.0, 0.0] and alpha[0, 0] == 0.0 and rgb[0, 0].tolist() == [1.0, 1.0, 1.0]

    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.tiff")
    rgb, _ = decode_image(tmp_path / "c.tiff")
    assert rgb[0, 0].tolist() == [1.0, 0.0, 0.0]

    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    rgb, _ = decode_image(tmp_path / "anim.gif")
    assert rgb[0, 0, 0] > 0.9 and rgb[0, 0, 2] < 0.1  # first frame


def test_images_without_a_caption_file_get_one_warning_that_counts_them(tmp_path, caplog):
    for name in ("a", "b", "c"):
        _save(tmp_path / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.txt").write_text("")  # an empty caption file is a choice, not a missing file
    with caplog.at_level(logging.WARNING):
        result = load_image_folder(tmp_path)
    assert result.warnings == ["2 of 3 images have no caption file (e.g. a.txt for a.png): they train with an "
                               "empty caption ([filewords])"]
    assert [r.getMessage() for r in caplog.records] == result.warnings
    assert load_image_folder(tmp_path, caption_extension="").warnings == [], "captions off: nothing is missing"


def test_bad_files_are_skipped_with_one_warning_each(tmp_path, caplog):
    _save(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "good.txt").write_text("a caption")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image at all")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    (tmp_path / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    _save(tmp_path / "huge.png", np.zeros((1100, 1000, 3), np.uint8))  # 1.1 MP > limit below
    with caplog.at_level(logging.WARNING):
        result = load_image_folder(tmp_path, max_megapixels=1.0)
    assert [item.stem for item in result.images] == ["good"]
    reasons = {w.split(":")[0].rsplit("/", 1)[-1]: w for w in result.warnings}
    assert set(reasons) == {"empty.png", "garbage.jpg", "truncated.png", "huge.png"}
    assert "0 bytes" in reasons["empty.png"]
    assert "megapixel" in reasons["huge.png"] and "decompression bomb" in reasons["huge.png"]
    assert "truncated" in reasons["truncated.png"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4


def test_empty_results_name_the_folder(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_image_folder(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="1 file"):
        load_image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_image_folder(tmp_path / "missing")


def test_recursive_and_kohya_repeats(tmp_path):
    (tmp_path / "3_style").mkdir()
    (tmp_path / "misc").mkdir()
    _save(tmp_path / "3_style" / "a.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "misc" / "b.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "top.png", np.zeros((4, 4, 3), np.uint8))
    assert [i.stem for i in load_image_folder(tmp_path).images] == ["top"]
    result = load_image_folder(tmp_path, recursive=True, use_kohya_repeats=True)
    assert [(i.stem, i.repeats) for i in result.images] == [("3_style/a", 3), ("misc/b", 1), ("top", 1)]
    assert kohya_repeats(tmp_path / "3_style" / "a.png", tmp_path) == 3


def test_parse_color():
    assert parse_color("white") == (255, 255, 255)
    assert parse_color("#102030") == (16, 32, 48)
    assert parse_color("1, 2, 3") == (1, 2, 3)
    with pytest.raises(ValueError, match="not a colour"):
        parse_color("nope")


def test_kohya_repeats_read_the_n_name_subfolders_without_recursive(tmp_path):
    # The kohya layout keeps every image in `N_name` subfolders: ticking the repeats option
    # must load them even when "recursive" is off (it used to load only top-level files).
    (tmp_path / "10_style").mkdir()
    (tmp_path / "misc").mkdir()
    (tmp_path / "10_style" / "deep").mkdir()
    _save(tmp_path / "10_style" / "a.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "10_style" / "deep" / "d.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "misc" / "b.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "top.png", np.zeros((4, 4, 3), np.uint8))
    result = load_image_folder(tmp_path, use_kohya_repeats=True)
    assert [(i.stem, i.repeats) for i in result.images] == [("10_style/a", 10), ("top", 1)]


def test_folder_fingerprint_follows_the_files_the_loader_reads(tmp_path):
    (tmp_path / "2_set").mkdir()
    _save(tmp_path / "2_set" / "a.png", np.zeros((4, 4, 3), np.uint8))
    before = folder_fingerprint(tmp_path, recursive=False, use_kohya_repeats=True)
    (tmp_path / "2_set" / "a.txt").write_text("new caption")
    assert folder_fingerprint(tmp_path, recursive=False, use_kohya_repeats=True) != before
    assert folder_fingerprint(tmp_path / "missing") == folder_fingerprint(tmp_path / "missing2") is None


def _png_with_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buffer, "PNG")
    png = buffer.getvalue()
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return png[:33] + chunk + png[33:]  # right after IHDR


def _tiff_with_tag_data_beyond_the_end() -> bytes:
    """A 4x4 RGB TIFF whose BitsPerSample values point past the end of the file."""
    import struct

    entries = [(256, 3, 1, 4), (257, 3, 1, 4), (258, 3, 3, 9999), (262, 3, 1, 2), (273, 4, 1, 8 + 2 + 12 * 8 + 4),
               (277, 3, 1, 3), (278, 3, 1, 4), (279, 4, 1, 48)]
    ifd = b"".join(struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 and count == 1
                                                             else struct.pack("<I", value))
                   for tag, kind, count, value in entries)
    return b"II*\x00" + struct.pack("<IH", 8, len(entries)) + ifd + b"\0\0\0\0" + b"\x80" * 48


def test_pillows_anonymous_warnings_become_one_warning_naming_the_file(tmp_path, caplog, recwarn):
    # Pillow warns "Truncated File Read" / "Corrupt EXIF data" without saying which file: a
    # skipped file must still give exactly one warning (ours), a damaged-but-readable one a
    # warning that names it.
    (tmp_path / "a_broken.tif").write_bytes(_tiff_with_tag_data_beyond_the_end())
    (tmp_path / "b_exif.png").write_bytes(_png_with_chunk(b"eXIf", b"II*\x00\x08\x00\x00\x00\x05\x00"))
    with caplog.at_level(logging.WARNING):
        result = load_image_folder(tmp_path, caption_extension="")
    assert [item.stem for item in result.images] == ["b_exif"]
    assert [str(w.message) for w in recwarn.list] == []
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == result.warnings and len(lines) == 2
    assert lines[0].startswith(f"skipped {tmp_path / 'a_broken.tif'}: ")
    assert lines[1].startswith(f"loaded {tmp_path / 'b_exif.png'} despite damaged data: ") and "EXIF" in lines[1]


def test_pillows_warnings_stay_with_their_file_when_workers_decode_at_once(tmp_path, monkeypatch):
    # warnings.catch_warnings swaps process-wide state: entered by several threads at once it
    # would leave its recorder installed and could hand one file's warning to another file.
    import warnings

    from hypernet_studio.hypernet.preprocess.workers import WORKERS_ENV

    damaged = _png_with_chunk(b"eXIf", b"II*\x00\x08\x00\x00\x00\x05\x00")
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for index in range(12):
        if index % 3 == 0:
            (tmp_path / f"{index:02d}.png").write_bytes(damaged)
        else:  # slow enough to decode that the workers overlap
            Image.fromarray(noise).save(tmp_path / f"{index:02d}.png", compress_level=1)
    filters, shown = list(warnings.filters), warnings.showwarning
    monkeypatch.setenv(WORKERS_ENV, "1")
    one = load_image_folder(tmp_path, caption_extension="").warnings
    monkeypatch.setenv(WORKERS_ENV, "4")
    for _ in range(2):
        assert load_image_folder(tmp_path, caption_extension="").warnings == one
    assert [line.split(" despite")[0] for line in one] == [f"loaded {tmp_path / f'{i:02d}.png'}" for i in (0, 3, 6, 9)]
    assert warnings.filters == filters and warnings.showwarning is shown
