"""Focal-point detectors and their combination, faces included (offline, with fallbacks)."""
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from hypernet_studio.hypernet.preprocess import faces, focal
from hypernet_studio.hypernet.preprocess.crop import CropSettings, focal_plan
from hypernet_studio.hypernet.preprocess.faces import FaceDetector
from hypernet_studio.hypernet.preprocess.focal import (
    FocalWeights,
    a1111_two_bin_score,
    combine_points,
    shannon_entropies,
    window_starts,
)


def _drawn_face_scene(width=1200, height=400, face_x=900):
    """Gray scene with a cartoon face (eyes, brows, nose, mouth) centred at face_x."""
    image = Image.new("RGB", (width, height), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    dx = face_x - 200
    draw.ellipse((120 + dx, 80, 280 + dx, 300), fill=(225, 190, 160))
    for x0 in (155, 210):
        draw.ellipse((x0 + dx, 150, x0 + 35 + dx, 175), fill=(255, 255, 255))
        draw.ellipse((x0 + 10 + dx, 152, x0 + 27 + dx, 172), fill=(30, 20, 10))
    draw.line((150 + dx, 140, 195 + dx, 135), fill=(60, 40, 20), width=5)
    draw.line((205 + dx, 135, 250 + dx, 140), fill=(60, 40, 20), width=5)
    draw.polygon([(200 + dx, 180), (190 + dx, 225), (210 + dx, 225)], fill=(200, 160, 130))
    draw.arc((170 + dx, 230, 230 + dx, 270), 20, 160, fill=(150, 40, 40), width=5)
    return image.filter(ImageFilter.GaussianBlur(2))


def test_shannon_entropy_is_real_entropy():
    half = np.zeros((4, 8), np.uint8)
    half[:, 4:] = 255
    assert shannon_entropies(half, 8, axis=1, starts=[0])[0] == pytest.approx(1.0)
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert shannon_entropies(levels, 16, axis=0, starts=[0])[0] == pytest.approx(8.0)
    assert shannon_entropies(np.full((4, 8), 7, np.uint8), 4, axis=1, starts=[0, 4]).tolist() == [0.0, 0.0]


def test_a1111_two_bin_score_reproduces_the_spec_values():
    half = np.zeros((64, 64), np.uint8)
    half[:, 32:] = 255
    assert a1111_two_bin_score(Image.fromarray(half)) == pytest.approx(2.0)
    sparse = np.zeros((64, 64), np.uint8)
    sparse[0, :8] = 255
    expected = -math.log2(8 / 4096) - math.log2(4088 / 4096)
    assert a1111_two_bin_score(Image.fromarray(sparse)) == pytest.approx(expected)  # about 9.0
    assert a1111_two_bin_score(Image.fromarray(np.zeros((64, 64), np.uint8))) == 0.0


def test_window_starts_a1111_skips_the_last_position():
    assert window_starts(20, 8, include_last=False) == [0, 4, 8]
    assert window_starts(20, 8, include_last=True) == [0, 4, 8, 12]


def test_combination_renormalises_weights_over_found_categories():
    weights = FocalWeights(face=0.9, entropy=0.15, edges=0.5)
    result = combine_points({"edges": [(0, 0), (10, 0)], "entropy": [(100, 50)], "face": []}, weights, (200, 100))
    w_edges, w_entropy = 0.5 / 0.65, 0.15 / 0.65
    assert result.point == (round(5 * w_edges + 100 * w_entropy), round(50 * w_entropy))
    assert result.categories["edges"].weight == pytest.approx(w_edges)
    assert "face" not in result.categories


def test_numpy_edges_fallback_without_opencv(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("no cv2")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    gray = np.full((256, 1024), 128, np.uint8)
    gray[28:228, 600:800] = 40 + (np.indices((200, 200)).sum(axis=0) // 25) % 2 * 200
    points = focal.edge_points(gray)
    assert points and all(590 <= x <= 810 for x, _ in points)
    detector = FaceDetector("auto")
    assert detector.backend == "none" and "not installed" in detector.warnings[0]


@pytest.mark.skipif(not faces.haar_available(), reason="this OpenCV build ships no Haar cascades")
def test_haar_finds_the_drawn_face_and_the_crop_follows_it():
    scene = _drawn_face_scene()
    detector = FaceDetector("haar")
    points = detector.detect(np.asarray(scene))
    assert points and all(850 <= x <= 950 and 120 <= y <= 200 for x, y in points)
    plan, result, _ = focal_plan(scene, CropSettings(width=400, height=400, weights=FocalWeights(0.9, 0, 0)),
                                 detector)
    assert "face" in result.categories and plan.box[0] <= 850 and plan.box[2] >= 950


def test_haar_hits_as_numpy_arrays_do_not_crash_and_first_cascade_wins(monkeypatch):
    class FakeCascade:
        def __init__(self, rects):
            self.rects = rects

        def detectMultiScale(self, *args, **kwargs):
            return self.rects

    hits = {"haarcascade_eye.xml": (), "haarcascade_frontalface_default.xml": np.array([[10, 20, 30, 40]]),
            "haarcascade_profileface.xml": np.array([[0, 0, 2, 2]])}
    monkeypatch.setattr(faces, "_FREE_CASCADES", {})  # the fakes must not stay for later tests
    monkeypatch.setattr(faces, "_haar_cascade", lambda name: FakeCascade(hits.get(name, ())))
    monkeypatch.setattr(faces, "haar_available", lambda: True)
    points = FaceDetector("haar").detect(np.zeros((100, 100, 3), np.uint8))
    assert points == [(25.0, 40.0)]


def test_opencv_without_haar_warns_and_turns_faces_off(monkeypatch):
    monkeypatch.setattr(faces, "haar_available", lambda: False)
    detector = FaceDetector("auto")
    assert detector.backend == "none" and "Haar" in detector.warnings[0]
    assert detector.detect(np.zeros((10, 10, 3), np.uint8)) == []


def test_yunet_needs_an_existing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        FaceDetector("yunet", tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="facedetect"):
        FaceDetector("yunet")
    assert FaceDetector("none").backend == "none"


def test_yunet_gets_a_downscaled_bgr_copy_and_points_map_back(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    model = tmp_path / "face_detection_yunet_2023mar.onnx"
    model.write_bytes(b"stand-in: the fake detector below never reads it")
    seen = {}

    class FakeYuNet:
        def setInputSize(self, size):
            seen["size"] = size

        def detect(self, image):
            seen["pixel"] = image[0, 0].tolist()
            seen["shape"] = image.shape
            return 1, np.array([[100.0, 50.0, 40.0, 60.0] + [0.0] * 10 + [0.95]], np.float32)

    class FakeFactory:
        @staticmethod
        def create(path, config, size, score, nms, top_k):
            seen["create"] = (path, score, nms, top_k)
            return FakeYuNet()

    monkeypatch.setattr(cv2, "FaceDetectorYN", FakeFactory, raising=False)
    detector = FaceDetector("auto", model)
    assert detector.backend == "yunet"
    rgb = np.zeros((800, 1280, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    points = detector.detect(rgb)
    assert seen["shape"] == (400, 640, 3) and seen["size"] == (640, 400)  # long side 640
    assert seen["pixel"] == [0, 0, 255]  # BGR
    assert seen["create"] == (str(model), 0.9, 0.3, 5000)
    assert points == [pytest.approx(((100 + 20) * 2, (50 + 0.33 * 60) * 2))]
    compat = FaceDetector("auto", model, a1111_compat=True)  # A1111: full size, RGB as it is
    assert compat.detect(rgb) == [pytest.approx((100 + 20, 50 + 0.33 * 60))]
    assert seen["shape"] == (800, 1280, 3) and seen["size"] == (1280, 800) and seen["pixel"] == [255, 0, 0]
