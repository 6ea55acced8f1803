"""Training from a folder (picture_files.py): sizes from headers, pixels decoded only when encoded,
and the same latents and losses as the in-memory path on the same pictures."""
import io
import os
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.preprocess.flip import flip_dataset
from hypernet_studio.hypernet.preprocess.image_folder import decode_image
from hypernet_studio.hypernet.preprocess.pipeline import load_folder_lists
from hypernet_studio.hypernet.preprocess.saving import save_dataset
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.config import TrainConfig
from hypernet_studio.hypernet.train.latents import LatentCache
from hypernet_studio.hypernet.train.picture_files import DecodeSettings, read_training_set
from hypernet_studio.hypernet.train.run import train_hypernetwork
from hypernet_studio.hypernet.train.session import TrainingData

from .fakes import CHANNELS, CONTEXT, FakeBackend

ROTATE_90 = 6  # EXIF orientation: the stored picture is shown turned a quarter


def _pixels(rng, height, width, channels=3):
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _png_with_exif_after_the_pixels(path, rng):
    """A PNG whose eXIf chunk follows IDAT: Pillow sees it only once it decodes the pixels."""
    buffer = io.BytesIO()
    Image.fromarray(_pixels(rng, 20, 60)).save(buffer, "PNG", exif=_exif(ROTATE_90))
    data, chunks, position = buffer.getvalue(), [], 8
    while position < len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        chunks.append(data[position:position + 12 + length])
        position += 12 + length
    exif = next(c for c in chunks if c[4:8] == b"eXIf")
    chunks.remove(exif)
    chunks.insert(len(chunks) - 1, exif)  # before IEND, after IDAT
    path.write_bytes(data[:8] + b"".join(chunks))


def test_sizes_come_from_headers_as_the_decode_makes_them(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(_pixels(rng, 40, 70)).save(tmp_path / "a_turned.jpg", exif=_exif(ROTATE_90))
    Image.fromarray(_pixels(rng, 600, 300)).save(tmp_path / "b_big.jpg")
    Image.fromarray(_pixels(rng, 30, 50, 4), "RGBA").save(tmp_path / "c_alpha.png")
    _png_with_exif_after_the_pixels(tmp_path / "d_trailing_exif.png", rng)
    with Image.open(tmp_path / "d_trailing_exif.png") as opened:
        assert "exif" not in opened.info, "the fixture hides its orientation until the pixels are decoded"
    Image.fromarray(rng.integers(0, 65535, (33, 44)).astype(np.uint16)).save(tmp_path / "e_16bit.png")
    (tmp_path / "f_broken.png").write_bytes(b"not a picture")
    (tmp_path / "a_turned.txt").write_text("turned, photo")

    found = read_training_set(tmp_path, settings=DecodeSettings(max_side=256))
    assert [p.path.name for p in found.pictures] == ["a_turned.jpg", "b_big.jpg", "c_alpha.png",
                                                     "d_trailing_exif.png", "e_16bit.png"]
    for picture in found.pictures:
        rgb, alpha = decode_image(picture.path, max_side=256)
        assert picture.size == (rgb.shape[1], rgb.shape[0]), picture.path.name
        assert picture.may_have_alpha == (alpha is not None), picture.path.name
    assert found.pictures[0].size == (40, 70) and found.pictures[3].size == (20, 60), "turned upright"
    assert found.pictures[1].size == (128, 256), "fitted to max_side"
    assert found.pictures[0].caption == "turned, photo" and found.pictures[1].caption == ""
    assert any(w.startswith(f"skipped {tmp_path / 'f_broken.png'}") for w in found.warnings)
    assert any("4 of 5 pictures have no caption file" in w for w in found.warnings)


def test_missing_empty_and_nested_folders_are_refused(tmp_path):
    with pytest.raises(InputError, match="input 'folder': .* is not a folder"):
        read_training_set(tmp_path / "nothing")
    (tmp_path / "deeper" / "set").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "deeper" / "set" / "a.png")
    with pytest.raises(InputError, match=r"has no pictures .* found 1 in other subfolders \(e.g. deeper/set/a.png\)"):
        read_training_set(tmp_path)
    with pytest.raises(InputError, match="input 'max_side'"):
        read_training_set(tmp_path / "deeper" / "set", settings=DecodeSettings(max_side=-1))


def _prepared_folder(root):
    """What a prep graph writes: pictures of two aspects, one with a mask, each with its flipped
    copy (Flip Images, append), saved by Save Dataset; plus a kohya `2_more` folder with a turned
    JPEG, repeated twice."""
    rng = np.random.default_rng(1)
    sizes = ((100, 200), (100, 100), (90, 90))
    images = [torch.from_numpy(_pixels(rng, height, width)).float().div(255)[None] for height, width in sizes]
    mask = torch.zeros(1, 90, 90)
    mask[:, :40, :] = 1.0  # the top is transparent
    mask[:, 40:60, :] = 0.5
    flipped = flip_dataset(images, [None, None, mask], ["wide, red", "square, blue", "masked, green"],
                           ["wide", "square", "masked"])
    folder = root / "prepared"
    save_dataset(folder, flipped.images, flipped.captions, flipped.stems, flipped.masks)
    (folder / "2_more").mkdir()
    Image.fromarray(_pixels(rng, 60, 150)).save(folder / "2_more" / "turned.jpg", exif=_exif(ROTATE_90))
    (folder / "2_more" / "turned.txt").write_text("turned, photo")
    return folder


def _config(aspect_buckets=True):
    return TrainConfig(name="net", steps=4, learning_rate="0.001", seed=3, batch_size=2, resolution=128,
                       aspect_buckets=aspect_buckets, latent_sampling="random", use_alpha_weight=True, save_every=0,
                       preview_every=0, csv_every=0, templates=["[filewords]"])


def _network():
    spec = HypernetSpec(layer_structure=[1, 2, 1], activation="linear", sizes=[CHANNELS, CONTEXT])
    return Hypernetwork.build(spec, seed=0, name="net")


@pytest.mark.parametrize("aspect_buckets", [True, False])
def test_the_folder_trains_on_the_same_latents_and_losses_as_the_image_lists(tmp_path, aspect_buckets):
    folder = _prepared_folder(tmp_path)
    lists = load_folder_lists(folder, use_kohya_repeats=True)  # Load Images, kohya_repeats on
    in_memory = TrainingData(lists.images, lists.captions, lists.masks)
    from_folder = TrainingData(training_set=read_training_set(folder))
    config = _config(aspect_buckets)
    memory_examples, folder_examples = in_memory.examples(config), from_folder.examples(config)
    assert len(folder_examples) == len(memory_examples) == 8, "6 saved (3 + flipped) and 1 picture repeated twice"
    assert [e.caption for e in folder_examples] == [e.caption for e in memory_examples]
    assert [e.size for e in folder_examples] == [e.size for e in memory_examples]
    if aspect_buckets:
        assert {e.size for e in folder_examples} == {(192, 64), (128, 128), (64, 256)}, "the turned one stands"
    assert all(e.pixels is None for e in folder_examples), "nothing decoded before encoding"
    caches = [LatentCache(examples, FakeBackend().encode_images, "random", 3, torch.device("cpu"), True)
              for examples in (memory_examples, folder_examples)]
    for name in ("means", "stds", "weights"):
        ours, theirs = getattr(caches[1], name), getattr(caches[0], name)
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(ours, theirs)), name
    assert sum(w is not None for w in caches[1].weights) == 2, "the masked picture and its flipped copy"
    assert all(e.pixels is None for e in folder_examples), "the pixels are dropped right after encoding"
    if not aspect_buckets:
        return  # the same examples and latents: the losses follow (trained once, with buckets, below)
    runs = [train_hypernetwork(FakeBackend(), _network(), data.examples(config), config)
            for data in (in_memory, from_folder)]
    assert len(runs[1].losses) == 4 and runs[1].losses == runs[0].losses
    for ours, theirs in zip(runs[1].hypernetwork.parameters(), runs[0].hypernetwork.parameters()):
        assert torch.equal(ours, theirs)


def test_cache_identity_names_the_file_and_what_makes_its_pixels(tmp_path):
    folder = _prepared_folder(tmp_path)
    examples = read_training_set(folder).examples(128)
    identities = [e.cache_identity for e in examples]
    turned = [i for i, identity in enumerate(identities) if "turned.jpg" in identity]
    assert len(turned) == 2 and identities[turned[0]] == identities[turned[1]], "a repeated picture has one identity"
    assert len(set(identities)) == 7 and all(str(folder.resolve()) in i for i in identities)
    stretched = read_training_set(folder).examples(128, aspect_buckets=False)
    assert not set(identities) & {e.cache_identity for e in stretched}, "the fit changes the pixels"
    other = read_training_set(folder, settings=DecodeSettings(background=(0, 0, 0))).examples(128)
    masked = next(i for i, identity in enumerate(identities) if "00004-masked.png" in identity)
    assert identities[masked] != other[masked].cache_identity, "the background changes a masked picture's pixels"
    first = folder / "00000-wide.png"
    stat = first.stat()
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert read_training_set(folder).examples(128)[0].cache_identity != identities[0], "a touched file is new"
    assert read_training_set(folder).examples(128)[1].cache_identity == identities[1]


def test_a_file_changed_after_it_was_read_is_refused_not_trained_on(tmp_path):
    folder = _prepared_folder(tmp_path)
    examples = read_training_set(folder).examples(128)
    Image.new("RGB", (200, 100), "white").save(folder / "00000-wide.png")
    with pytest.raises(InputError, match="input 'training_set': picture .*00000-wide.png could not be read: it "
                                         "changed after the training set was read"):
        examples[0].pixels_to_encode()
    examples[1].pixels_to_encode()
    examples[1].release_pixels()
    with pytest.raises(RuntimeError, match="were released"):
        examples[1].pixels_to_encode()


def test_with_the_latent_cache_a_second_folder_run_decodes_and_encodes_nothing(tmp_path, monkeypatch):
    from hypernet_studio.hypernet.train import picture_files
    from hypernet_studio.hypernet.train.encoding_cache import EncodingCache

    folder = _prepared_folder(tmp_path)
    decoded = []
    real = picture_files.PictureFileSource.training_pixels
    monkeypatch.setattr(picture_files.PictureFileSource, "training_pixels",
                        lambda self: decoded.append(self.picture.path.name) or real(self))

    def latents_of_a_run():
        backend = FakeBackend()
        cache = EncodingCache(tmp_path / "cache", 10**9, "vae", "clip")
        LatentCache(read_training_set(folder).examples(128), backend.encode_images, "random", 3,
                    torch.device("cpu"), cache=cache)
        return backend.encoded_images

    assert latents_of_a_run() == 7 and len(decoded) == 7, "the repeated picture is decoded and encoded once"
    decoded.clear()
    assert latents_of_a_run() == 0 and decoded == [], "its cache_identity finds each latent without decoding"
    first = folder / "00000-wide.png"
    stat = first.stat()
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert latents_of_a_run() == 1 and decoded == ["00000-wide.png"], "a touched file alone is read again"
