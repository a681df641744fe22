"""Pure logic of the face detectors: CenterFace's decoding, input sizes, levelled crops, selection, errors.

No model is loaded here (see test_vision_faces.py for the real CenterFace on real images).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from vision.errors import ModelLoadError, ModelMissingError
from vision.facedet import Faces, select_face_detector
from vision.facedet.align import crop_transform, eye_roll_deg, face_crop
from vision.facedet.centerface import CenterFaceDetector, decode, fit_input, preprocess, to_image
from vision.facedet.haar import HaarFaceDetector
from vision.settings import FaceDetectorKind, VisionSettings


def _maps(h: int, w: int) -> list[NDArray[np.float32]]:
    """Empty CenterFace outputs for an h × w input (stride 4)."""
    return [np.zeros((1, c, h // 4, w // 4), np.float32) for c in (1, 2, 2, 10)]


def _peak(maps: list[NDArray[np.float32]], row: int, col: int, score: float, size_hw: tuple[float, float],
          offset_yx: tuple[float, float] = (0.0, 0.0)) -> None:
    heatmap, scale, offset, landmarks = maps
    heatmap[0, 0, row, col] = score
    scale[0, :, row, col] = np.log(np.array(size_hw) / 4)
    offset[0, :, row, col] = offset_yx
    # Landmarks as (y, x) fractions of the box: eyes at 0.3 down, 0.3 and 0.7 across; nose; mouth corners.
    landmarks[0, :, row, col] = [0.3, 0.3, 0.3, 0.7, 0.55, 0.5, 0.8, 0.35, 0.8, 0.65]


def test_decode_turns_peaks_into_boxes_and_landmarks() -> None:
    maps = _maps(128, 128)
    _peak(maps, 10, 20, 0.9, (40.0, 32.0), offset_yx=(0.25, 0.5))
    _peak(maps, 11, 20, 0.6, (40.0, 32.0))  # the same face one cell lower: NMS keeps the stronger
    _peak(maps, 25, 5, 0.7, (16.0, 12.0))  # another face
    _peak(maps, 28, 28, 0.4, (16.0, 16.0))  # under the threshold
    faces = decode(maps, threshold=0.5)
    assert len(faces) == 2
    np.testing.assert_allclose(faces.scores, [0.9, 0.7], atol=1e-6)
    cx, cy = (20 + 0.5 + 0.5) * 4, (10 + 0.25 + 0.5) * 4  # (cell + offset + 0.5) × stride
    np.testing.assert_allclose(faces.boxes[0], [cx - 16, cy - 20, cx + 16, cy + 20], atol=1e-4)
    assert faces.landmarks is not None and faces.landmarks.shape == (2, 5, 2)
    x1, y1 = cx - 16, cy - 20
    np.testing.assert_allclose(faces.landmarks[0, 0], [x1 + 0.3 * 32, y1 + 0.3 * 40], atol=1e-4)  # (x, y)
    np.testing.assert_allclose(faces.landmarks[0, 1], [x1 + 0.7 * 32, y1 + 0.3 * 40], atol=1e-4)
    assert len(decode(_maps(64, 64), threshold=0.5)) == 0


def test_faces_map_back_to_the_image_and_small_ones_drop() -> None:
    maps = _maps(64, 96)
    _peak(maps, 8, 8, 0.9, (40.0, 36.0))
    _peak(maps, 8, 20, 0.8, (8.0, 8.0))
    fit = fit_input(100, 200, 64)  # scale 0.45: a 96 × 64 input, like the maps
    assert (fit.width, fit.height) == (96, 64)
    faces = to_image(decode(maps, 0.5), fit, 100, 200, min_size=20)
    assert len(faces) == 1  # the 8 px face is 8 / 0.45 ≈ 18 px in the image: under min_size
    np.testing.assert_allclose(faces.boxes[0, 2] - faces.boxes[0, 0], 36 / fit.scale, rtol=1e-4)
    assert faces.landmarks is not None
    np.testing.assert_allclose(faces.landmarks[0, 0, 0], faces.boxes[0, 0] + 0.3 * 36 / fit.scale, rtol=1e-4)
    fit_small = fit_input(400, 800, 64)  # the same input for an image 4× larger
    assert (fit_small.width, fit_small.height) == (96, 64)
    big = to_image(decode(maps, 0.5), fit_small, 400, 800, min_size=20)
    assert len(big) == 2
    assert (big.boxes[:, [0, 2]] <= 800).all() and (big.boxes >= 0).all()


def test_input_sizes_are_multiples_of_32_near_the_budget() -> None:
    for h, w in ((277, 977), (250, 190), (40, 30), (2000, 50), (480, 640)):
        fit = fit_input(h, w, 256)
        assert fit.width % 32 == 0 and fit.height % 32 == 0
        assert round(w * fit.scale) <= fit.width and round(h * fit.scale) <= fit.height
        assert fit.scale <= 2.0  # small regions are enlarged at most twice
        assert max(fit.width, fit.height) <= 4 * 256 + 32
        if fit.scale < 2.0 and max(h, w) / min(h, w) < 4:
            assert 0.8 * 256**2 <= (w * fit.scale) * (h * fit.scale) <= 1.01 * 256**2  # area, not long side
    fixed = fit_input(277, 977, 256, fixed=(256, 256))
    assert (fixed.width, fixed.height) == (256, 256) and round(977 * fixed.scale) <= 256


def test_preprocess_is_rgb_0_255_padded_right_and_bottom() -> None:
    image = np.zeros((50, 100, 3), np.uint8)
    image[:, :] = (255, 0, 10)  # BGR: blue
    blob = preprocess(image, fit_input(50, 100, 64))
    assert blob.dtype == np.float32 and blob.shape[:2] == (1, 3) and blob.shape[2] % 32 == 0
    assert blob[0, 2, 0, 0] == 255 and blob[0, 0, 0, 0] == 10  # RGB order, no scaling
    assert blob[0, :, -1, -1].sum() == 0  # padding is black


def test_eye_roll_and_levelled_crop() -> None:
    # Eyes 50 px apart, the right one 29 px lower: the head leans 30° clockwise on screen.
    lm = np.array([[100, 100], [150, 129], [125, 130], [110, 160], [140, 170]], np.float32)
    roll = eye_roll_deg(lm)
    assert roll == pytest.approx(30.1, abs=0.2)
    assert eye_roll_deg(None) == 0.0
    assert eye_roll_deg(lm[[1, 0, 2, 3, 4]]) == 0.0  # eyes crossed over: nothing to level
    box = np.array([90, 80, 160, 190], np.float32)
    m = crop_transform(box, 0.2, 64, roll)
    eyes = lm[:2] @ m[:, :2].T + m[:, 2]
    assert eyes[0, 1] == pytest.approx(eyes[1, 1], abs=1e-6)  # level in the crop
    image = np.zeros((300, 300, 3), np.uint8)
    for x, y in lm[:2]:
        cv2.circle(image, (int(x), int(y)), 4, (255, 255, 255), -1)
    crop = face_crop(image, box, 0.2, 64, roll)
    ys, xs = np.nonzero(crop[:, :, 0] > 128)
    assert abs(ys[xs < 32].mean() - ys[xs >= 32].mean()) < 1.0
    unrotated = face_crop(image, box, 0.2, 64)
    ys, xs = np.nonzero(unrotated[:, :, 0] > 128)
    assert ys[xs >= 32].mean() - ys[xs < 32].mean() > 8  # without the landmarks the tilt stays


def test_crop_of_a_face_at_the_frame_edge_is_square() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = face_crop(image, np.array([-20, -10, 30, 60], np.float32), 0.2, 64, 12.0)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8


def test_faces_shift_and_select() -> None:
    faces = Faces(np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32), np.array([0.9, 0.6], np.float32),
                  np.zeros((2, 5, 2), np.float32))
    moved = faces.select(np.array([1])).shifted(100, 50)
    np.testing.assert_allclose(moved.boxes, [[105, 55, 120, 70]])
    assert moved.landmarks is not None and (moved.landmarks == [100, 50]).all()
    assert len(Faces.empty()) == 0 and Faces.empty().landmarks is None


# --- the setting and the selection


def test_setting_chooses_the_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATUS_MODELS_CACHE_DIR", "/srv/models")
    s = VisionSettings()
    assert s.face_detector is FaceDetectorKind.centerface
    assert isinstance(select_face_detector(s), CenterFaceDetector)
    assert str(s.face_detector_path()) == "/srv/models/vision/centerface.onnx"
    assert s.model_files()["WATUS_VISION_FACE_DETECTOR_MODEL"] == Path("/srv/models/vision/centerface.onnx")

    monkeypatch.setenv("WATUS_VISION_FACE_DETECTOR", "haar")
    haar = VisionSettings()
    assert haar.face_detector is FaceDetectorKind.haar
    assert isinstance(select_face_detector(haar), HaarFaceDetector)
    assert "WATUS_VISION_FACE_DETECTOR_MODEL" not in haar.model_files()

    monkeypatch.setenv("WATUS_VISION_FACE_DETECTOR", "centerface")
    monkeypatch.setenv("WATUS_VISION_FACE_DETECTOR_MODEL", "/opt/centerface.engine")
    assert VisionSettings().face_detector_path() == Path("/opt/centerface.engine")


@pytest.mark.parametrize("bad", [{"face_detector": "yunet"}, {"face_search_size": 250}, {"face_confidence": 1.0},
                                 {"face_search_size": 32}])
def test_face_settings_bounds(bad: dict[str, object]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        VisionSettings(**bad)  # type: ignore[arg-type]


def test_missing_centerface_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match=r"WATUS_VISION_FACE_DETECTOR_MODEL.*watus models setup"):
        CenterFaceDetector(tmp_path / "centerface.onnx").load()
    other = tmp_path / "centerface.tflite"
    other.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="cannot tell the engine"):
        CenterFaceDetector(other).load()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="could not load"):
        CenterFaceDetector(broken).load()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_engine_without_tensorrt_says_what_it_needs(tmp_path: Path) -> None:
    engine = tmp_path / "centerface.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadError, match=r"needs the `tensorrt` module.*ONNX file"):
        CenterFaceDetector(engine).load()


def test_haar_needs_opencv_4(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)  # as in opencv-python 5
    with pytest.raises(ModelLoadError, match=r"no CascadeClassifier.*WATUS_VISION_FACE_DETECTOR=centerface"):
        HaarFaceDetector().load()
    monkeypatch.undo()
    if not hasattr(cv2, "CascadeClassifier"):
        return
    with pytest.raises(ModelMissingError, match="WATUS_VISION_FACE_CASCADE"):
        HaarFaceDetector(tmp_path / "none.xml").load()
