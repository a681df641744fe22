"""Faces found and face-stage time per face detector on the sample images (for `watus bench vision`).

    from vision.facebench import compare_face_detectors, sample_face_images
    rows = compare_face_detectors(VisionSettings(threads=2), sample_face_images())

Each row is one detector on one image: people YOLO found, faces found among them, and the median
over `repeats` runs of the face stage (find + classify every person, as `POST /v1/detect` does) and of
the find step alone. The detector is loaded once and shared; each face detector is loaded in turn.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.app import build_faces
from vision.detector import select_detector
from vision.facedet.haar import haar_available
from vision.pipeline import person_class
from vision.samples import sample_image
from vision.settings import FaceDetectorKind, VisionSettings


@dataclass
class FaceStageFigure:
    detector: str
    image: str
    people: int
    faces: int
    faces_ms: float
    find_ms: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def rotated(image: NDArray[np.uint8], degrees: float) -> NDArray[np.uint8]:
    """The image turned about its centre (counter-clockwise for positive degrees), same size, edges replicated."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return np.asarray(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE), np.uint8)


def sample_face_images() -> dict[str, NDArray[np.uint8]]:
    """bus.jpg and zidane.jpg as they are and turned ±30° (FileNotFoundError before `watus models setup`)."""
    out: dict[str, NDArray[np.uint8]] = {}
    for name in ("bus.jpg", "zidane.jpg"):
        image = np.asarray(cv2.imread(str(sample_image(name))), np.uint8)
        out[name] = image
        for deg in (30, -30):
            out[f"{name} {deg:+d}°"] = rotated(image, deg)
    return out


def compare_face_detectors(settings: VisionSettings, images: Mapping[str, NDArray[np.uint8]],
                           kinds: Iterable[FaceDetectorKind] = tuple(FaceDetectorKind),
                           repeats: int = 5) -> list[FaceStageFigure]:
    """Faces found and face-stage ms of each face detector on each image (Haar skipped where OpenCV lacks it)."""
    detector = select_detector(settings)
    detector.load()
    person = person_class(detector.names)
    people: dict[str, list[NDArray[np.float32]]] = {}
    for name, image in images.items():
        dets, _ = detector.detect(image)
        people[name] = [dets.boxes[i] for i in range(len(dets)) if int(dets.class_ids[i]) == person]
    rows: list[FaceStageFigure] = []
    for kind in kinds:
        if kind is FaceDetectorKind.haar and not haar_available():
            continue
        faces = build_faces(settings.model_copy(update={"face_detector": kind, "faces": True}))
        assert faces is not None
        faces.load()
        faces.warm()
        for name, image in images.items():
            stage, find, found = [], [], 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                found = sum(faces.analyze(image, box) is not None for box in people[name])
                t1 = time.perf_counter()
                for box in people[name]:
                    faces.find_face(image, box)
                t2 = time.perf_counter()
                stage.append((t1 - t0) * 1e3)
                find.append((t2 - t1) * 1e3)
            rows.append(FaceStageFigure(kind.value, name, len(people[name]), found,
                                        round(statistics.median(stage), 2), round(statistics.median(find), 2)))
        faces.close()
    detector.close()
    return rows
