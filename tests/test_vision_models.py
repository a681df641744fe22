"""The real models on real images: the ONNX detector against Ultralytics' own figures, and faces.

Reference boxes are what Ultralytics' `YOLO("yolo11n-seg.pt").predict()` gives on its sample images
(see shared/ASSETS.md); the ONNX path must reproduce them without torch.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from vision.app import build_faces
from vision.detector import Detector, select_detector
from vision.detector.base import Detections
from vision.faces import FaceAnalyzer
from vision.pipeline import analyze_image
from vision.samples import sample_image
from vision.settings import VisionSettings

# (label, confidence, x1, y1, x2, y2) in pixels of the original image.
BUS_REFERENCE = [("person", 0.87, 51.4, 395.0, 243.1, 904.0), ("bus", 0.87, 9.7, 227.6, 800.0, 738.8),
                 ("person", 0.84, 667.6, 385.8, 810.0, 877.4), ("person", 0.83, 220.7, 404.6, 345.2, 859.4),
                 ("person", 0.40, 1.7, 553.3, 81.3, 874.2)]
ZIDANE_REFERENCE = [("person", 0.90, 747.4, 42.4, 1148.2, 710.6), ("person", 0.80, 121.8, 200.8, 1077.9, 711.8),
                    ("tie", 0.33, 440.8, 437.8, 517.3, 715.9)]


def _image(name: str) -> NDArray[np.uint8]:
    try:
        path = sample_image(name)
    except FileNotFoundError as e:
        pytest.fail(str(e))
    return cv2.imread(str(path))


@pytest.fixture(scope="module")
def settings() -> VisionSettings:
    return VisionSettings(threads=2)


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


def _labelled(d: Detections, names: dict[int, str]) -> list[tuple[str, float, list[float]]]:
    return [(names[int(c)], float(s), b.tolist()) for b, s, c in zip(d.boxes, d.scores, d.class_ids, strict=True)]


@pytest.mark.parametrize(("name", "reference"), [("bus.jpg", BUS_REFERENCE), ("zidane.jpg", ZIDANE_REFERENCE)])
def test_detector_matches_ultralytics(detector: Detector, name: str,
                                      reference: list[tuple[str, float, float, float, float, float]]) -> None:
    found = _labelled(detector.detect(_image(name))[0], detector.names)
    assert len(found) == len(reference), found
    for label, conf, *box in reference:
        # Each reference object has a detection of the same label at (nearly) the same place.
        match = [f for f in found if f[0] == label and np.abs(np.array(f[2]) - box).max() < 3.0]
        assert match, f"{label} at {box} not found in {found}"
        assert match[0][1] == pytest.approx(conf, abs=0.02)


def test_bus_and_people_have_sensible_boxes(detector: Detector) -> None:
    image = _image("bus.jpg")
    h, w = image.shape[:2]
    found = _labelled(detector.detect(image)[0], detector.names)
    bus = [f for f in found if f[0] == "bus"]
    people = [f for f in found if f[0] == "person" and f[1] > 0.5]
    assert len(bus) == 1 and len(people) == 3
    x1, y1, x2, y2 = bus[0][2]
    assert (x2 - x1) > 0.9 * w and 0.15 * h < y1 < y2 < 0.75 * h  # spans the street, in the middle band
    for _, _, (px1, py1, px2, py2) in people:
        assert 1.5 < (py2 - py1) / (px2 - px1) < 5  # standing people: taller than wide
        assert py2 > 0.75 * h  # feet on the pavement, below the bus floor


def test_drawn_frames_and_shifted_objects(detector: Detector) -> None:
    wall = np.full((480, 640, 3), (90, 110, 120), np.uint8)
    cv2.rectangle(wall, (50, 60), (200, 160), (40, 40, 200), -1)
    cv2.circle(wall, (450, 300), 60, (200, 180, 40), -1)
    found = _labelled(detector.detect(wall)[0], detector.names)
    # Shapes on a wall: no person, nothing confident (a yellow disc may pass for a frisbee at ~0.3).
    assert all(label != "person" and conf < 0.5 for label, conf, _ in found), found

    # zidane.jpg pasted off-centre on a larger canvas: the same people, moved by the offset.
    zidane = _image("zidane.jpg")
    canvas = np.full((1200, 1600, 3), 114, np.uint8)
    canvas[300:1020, 200:1480] = zidane
    shifted = _labelled(detector.detect(canvas)[0], detector.names)
    people = sorted(f[2] for f in shifted if f[0] == "person")
    reference = sorted([r[2] + 200, r[3] + 300, r[4] + 200, r[5] + 300] for r in ZIDANE_REFERENCE
                       if r[0] == "person")
    assert len(people) == 2
    np.testing.assert_allclose(people, reference, atol=40)  # another scale: close, not to the pixel


def test_classes_of_interest(settings: VisionSettings) -> None:
    only_buses = select_detector(settings.model_copy(update={"classes": ["bus"]}))
    only_buses.load()
    found = _labelled(only_buses.detect(_image("bus.jpg"))[0], only_buses.names)
    assert [f[0] for f in found] == ["bus"]


def test_faces_get_age_gender_emotion(detector: Detector, faces: FaceAnalyzer) -> None:
    image = _image("zidane.jpg")
    scene = analyze_image(image, detector, faces)
    people = scene.people
    assert len(people) == 2
    with_face = [p for p in people if p.face is not None]
    assert with_face, "no face found on zidane.jpg"
    for p in with_face:
        assert p.face is not None and p.age is not None and p.gender is not None and p.emotion is not None
        # The face lies in the top half of its person box.
        assert p.box.x1 <= p.face.x1 < p.face.x2 <= p.box.x2
        assert p.box.y1 <= p.face.y1 < p.face.y2 <= p.box.y1 + 0.5 * (p.box.y2 - p.box.y1)
        assert 20 <= p.age.years <= 75 and 0 < p.age.confidence <= 1  # adults
        assert p.gender.label == "male" and p.gender.confidence > 0.6  # two men
        assert p.emotion.label in faces.emotion_labels and len(p.emotion_scores or {}) == 8
    assert scene.timings.faces_ms > 0


def test_face_search_stays_inside_the_person(faces: FaceAnalyzer) -> None:
    image = _image("zidane.jpg")
    # A person box over the wall of spectators' heads far from both men: no face of theirs is found.
    assert faces.find_face(image, np.array([0, 0, 40, 60], np.float32)) is None
    obs = faces.analyze(image, np.array([747, 42, 1148, 710], np.float32))
    assert obs is not None and 747 <= obs.box[0] < obs.box[2] <= 1148
    assert set(obs.timings_ms) == {"detect", "age", "gender", "emotion"}


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                    reason="ultralytics is not installed here (only the tool venv of `watus models setup` has it)")
def test_ultralytics_engine_on_a_checkpoint(settings: VisionSettings) -> None:
    checkpoint = os.environ.get("WATUS_TEST_YOLO_PT")
    if not checkpoint:
        pytest.skip("set WATUS_TEST_YOLO_PT to a YOLO .pt to test the ultralytics engine")
    d = select_detector(settings, Path(checkpoint))
    d.load()
    found = _labelled(d.detect(_image("bus.jpg"))[0], d.names)
    assert {"bus", "person"} <= {f[0] for f in found}


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed (robot only)")
def test_tensorrt_engine(settings: VisionSettings) -> None:
    engine = os.environ.get("WATUS_TEST_YOLO_ENGINE")
    if not engine:
        pytest.skip("set WATUS_TEST_YOLO_ENGINE to an engine built by models/export_yolo.py")
    d = select_detector(settings, Path(engine))
    d.load()
    found = _labelled(d.detect(_image("bus.jpg"))[0], d.names)
    assert {"bus", "person"} <= {f[0] for f in found}
