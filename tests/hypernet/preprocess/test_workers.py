"""Prep on every core: the HYPERNET_STUDIO_WORKERS setting, the ordered bounded pool, and Load
Images and focal Auto Crop giving the same output, byte for byte and in order, with 1, 2 or 4
workers."""
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from hypernet_studio.hypernet.errors import InputError
from hypernet_studio.hypernet.preprocess import faces, workers
from hypernet_studio.hypernet.preprocess.crop import CropSettings, crop_dataset
from hypernet_studio.hypernet.preprocess.workers import (
    ITEMS_AHEAD_PER_WORKER,
    WORKERS_ENV,
    WorkersSettingError,
    imap_in_workers,
    machine_cores,
    map_in_workers,
    workers_setting,
)
from hypernet_studio.nodes.dataset import AutoCropNode, LoadImagesNode


def test_the_setting_defaults_to_the_machines_cores_and_reads_whole_numbers():
    assert workers_setting({}) == machine_cores() >= 1
    assert workers_setting({WORKERS_ENV: "  "}) == machine_cores()
    assert workers_setting({WORKERS_ENV: "1"}) == 1
    assert workers_setting({WORKERS_ENV: " 3 "}) == 3


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "100000"])
def test_a_bad_setting_is_refused_naming_the_variable_and_what_to_set(value):
    with pytest.raises(WorkersSettingError) as refused:
        workers_setting({WORKERS_ENV: value})
    message = str(refused.value)
    assert message.startswith(f"setting {WORKERS_ENV}={value!r}: ") and "from 1 (in-process)" in message
    assert isinstance(refused.value, InputError)  # so VALIDATE_INPUTS reports it at queue time


def test_results_come_in_item_order_from_other_threads_however_long_each_takes():
    def slow_for_early_items(item):
        time.sleep(0.002 * (8 - item))
        return item, threading.get_ident()

    results = map_in_workers(slow_for_early_items, range(8), workers=4)
    assert [item for item, _ in results] == list(range(8))
    assert threading.get_ident() not in {thread for _, thread in results}
    in_process = map_in_workers(slow_for_early_items, range(3), workers=1)
    assert {thread for _, thread in in_process} == {threading.get_ident()}


def test_an_error_is_raised_at_its_items_place_after_the_earlier_results():
    def fails_on_three(item):
        if item == 3:
            raise ValueError("three is bad")
        return item

    seen = []
    with pytest.raises(ValueError, match="three is bad"):
        for result in imap_in_workers(fails_on_three, range(10), workers=2):
            seen.append(result)
    assert seen == [0, 1, 2]


def test_few_items_are_in_flight_and_a_consumers_interrupt_cancels_the_rest():
    started = []
    release = threading.Event()

    def waits(item):
        started.append(item)
        release.wait(5)
        return item

    class Interrupted(Exception):
        pass

    def progress(done):
        raise Interrupted  # as ComfyUI's progress hook raises on the user's interrupt

    timer = threading.Timer(0.05, release.set)
    timer.start()
    with pytest.raises(Interrupted):
        map_in_workers(waits, range(100), workers=2, on_done=progress)
    timer.cancel()
    # The first result was awaited with 2 x ITEMS_AHEAD_PER_WORKER items submitted; each result
    # taken submits one more, and the interrupt came at the first: nothing else ever started.
    assert len(started) <= 2 * ITEMS_AHEAD_PER_WORKER + 1


def test_concurrent_haar_detections_never_share_a_cascade(monkeypatch):
    in_use = set()
    shared = []

    class ExclusiveCascade:
        def detectMultiScale(self, *args, **kwargs):
            if id(self) in in_use:
                shared.append(id(self))
            in_use.add(id(self))
            time.sleep(0.001)
            in_use.discard(id(self))
            return ()

    monkeypatch.setattr(faces, "_FREE_CASCADES", {})
    monkeypatch.setattr(faces, "_haar_cascade", lambda name: ExclusiveCascade())
    monkeypatch.setattr(faces, "haar_available", lambda: True)
    detector = faces.FaceDetector("haar")
    assert map_in_workers(lambda _: detector.detect(np.zeros((40, 40, 3), np.uint8)), range(12), workers=4) == [[]] * 12
    assert shared == []
    # Loaded cascades are kept for the next picture: at most one per worker per file.
    assert all(1 <= len(free) <= 4 for free in faces._FREE_CASCADES.values())


def test_concurrent_yunet_detections_never_share_a_model(monkeypatch, tmp_path):
    import types

    in_use, shared, made = set(), [], []

    class ExclusiveYuNet:
        def setInputSize(self, size):
            if id(self) in in_use:
                shared.append(id(self))
            in_use.add(id(self))

        def detect(self, picture):
            time.sleep(0.001)
            in_use.discard(id(self))
            return 1, np.array([[10.0, 20.0, 8.0, 6.0]])

    def create(*args):
        made.append(ExclusiveYuNet())
        return made[-1]

    fake_cv2 = types.SimpleNamespace(FaceDetectorYN=types.SimpleNamespace(create=create), __version__="4.x",
                                     COLOR_RGB2BGR=4, INTER_AREA=3, cvtColor=lambda picture, code: picture,
                                     resize=lambda picture, size, interpolation: picture)
    monkeypatch.setattr(faces, "_import_cv2", lambda: fake_cv2)
    model = tmp_path / "yunet.onnx"
    model.write_bytes(b"")
    detector = faces.FaceDetector("yunet", model)
    points = map_in_workers(lambda _: detector.detect(np.zeros((40, 40, 3), np.uint8)), range(12), workers=4)
    assert points == [[(14.0, 20.0 + 0.33 * 6.0)]] * 12
    assert shared == [] and 1 <= len(made) <= 4  # one model per worker at most, kept between pictures


def _photos(folder, count=7):
    """Small noisy pictures of different sizes, one with alpha, one unreadable, most captioned."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True)
    for index in range(count):
        height, width = 60 + 8 * index, 90 - 4 * index
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{index}.jpg", quality=90)
        if index % 3:
            (folder / f"photo{index}.txt").write_text(f"caption {index}")
    rgba = rng.integers(0, 256, (70, 50, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "photo10_cutout.png")
    (folder / "photo11_broken.jpg").write_bytes(b"not a picture")


def _load_and_focal_crop(monkeypatch, count):
    monkeypatch.setenv(WORKERS_ENV, str(count))
    images, masks, captions, stems, *_ = LoadImagesNode().load("set", False, ".txt", False, 0, 0, "white",
                                                              100.0)["result"]
    widgets = {"method": ["focal"], "width": [48], "height": [40], "face_weight": [0.9], "entropy_weight": [0.15],
               "edges_weight": [0.5], "face_detector": ["auto"], "face_model": [""], "debug": [True]}
    cropped = AutoCropNode().crop(images, captions, masks, stems, **widgets)
    return (images, masks, captions, stems), cropped


@pytest.mark.parametrize("count", [2, 4])
def test_load_images_and_focal_auto_crop_match_one_worker_byte_for_byte(headless_dirs, monkeypatch, count):
    _photos(headless_dirs / "input" / "set")
    (one_loaded, one_cropped) = _load_and_focal_crop(monkeypatch, 1)
    (many_loaded, many_cropped) = _load_and_focal_crop(monkeypatch, count)
    assert one_loaded[3] == many_loaded[3] == [f"photo{i}" for i in range(7)] + ["photo10_cutout"]
    assert one_loaded[2] == many_loaded[2]
    for one, many in zip(one_loaded[:2], many_loaded[:2]):
        assert len(one) == len(many) == 8 and all(torch.equal(a, b) for a, b in zip(one, many))
    assert one_cropped["ui"] == many_cropped["ui"]
    one_out, many_out = one_cropped["result"], many_cropped["result"]
    assert one_out[2:4] == many_out[2:4] and one_out[5] == many_out[5]  # captions, stems, boxes JSON
    for index in (0, 1, 4):  # images, masks, debug pictures
        assert len(one_out[index]) == len(many_out[index]) == 8
        assert all(torch.equal(a, b) for a, b in zip(one_out[index], many_out[index]))
    assert many_out[1][7].max() > 0  # the cutout's mask went through the crop too


def test_the_nodes_refuse_a_bad_setting_at_queue_time(headless_dirs, monkeypatch):
    (headless_dirs / "input" / "set").mkdir()
    monkeypatch.setenv(WORKERS_ENV, "lots")
    for verdict in (LoadImagesNode.VALIDATE_INPUTS(folder="set", background="white"),
                    AutoCropNode.VALIDATE_INPUTS(face_detector=["auto"], face_model=[""])):
        assert isinstance(verdict, str) and verdict.startswith(f"setting {WORKERS_ENV}='lots': not a whole number")
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert LoadImagesNode.VALIDATE_INPUTS(folder="set", background="white") is True


def test_crop_progress_counts_every_picture_in_order(monkeypatch):
    pictures = [Image.fromarray(np.full((40 + i, 50, 3), 20 * i, np.uint8)) for i in range(5)]
    done = []
    out = crop_dataset(pictures, [None] * 5, [""] * 5, [f"s{i}" for i in range(5)],
                       CropSettings(method="center", width=32, height=32), on_progress=done.append, workers=3)
    assert done == [1, 2, 3, 4, 5] and out.stems == [f"s{i}" for i in range(5)]
    assert [box["source"] for box in out.boxes] == list(range(5))


def test_the_library_reads_the_setting_when_no_count_is_given(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "1")
    assert {thread for thread in map_in_workers(lambda _: threading.get_ident(), range(4))} == {threading.get_ident()}
    monkeypatch.setenv(WORKERS_ENV, "nope")
    with pytest.raises(WorkersSettingError):
        map_in_workers(str, range(4))
    assert workers.MAX_WORKERS >= 64


def test_the_cli_refuses_a_bad_setting_with_exit_2_before_reading_a_picture(headless_dirs, monkeypatch, capsys):
    import json

    from hypernet_studio.runtime import cli

    _photos(headless_dirs / "input" / "set", count=2)
    workflow = headless_dirs / "prep.json"
    workflow.write_text(json.dumps({
        "1": {"class_type": "HN_LoadImages", "inputs": {
            "folder": "set", "recursive": False, "caption_extension": ".txt", "kohya_repeats": False, "offset": 0,
            "limit": 0, "background": "white", "max_megapixels": 100.0}},
        "2": {"class_type": "HN_SaveDataset", "inputs": {"images": ["1", 0], "folder": "out", "naming": "stem",
                                                         "save_alpha": True}}}))
    monkeypatch.setenv("HYPERNET_STUDIO_HOME", str(headless_dirs))
    monkeypatch.setenv(WORKERS_ENV, "-1")
    decoded = []
    monkeypatch.setattr("hypernet_studio.hypernet.preprocess.image_folder.decode_image",
                        lambda *args, **kwargs: decoded.append(args))
    assert cli.main(["run", str(workflow)]) == 2
    assert f"node 1 (HN_LoadImages): setting {WORKERS_ENV}='-1': out of range" in capsys.readouterr().err
    assert decoded == [] and not (headless_dirs / "output" / "out").exists()
