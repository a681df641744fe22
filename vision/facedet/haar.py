"""OpenCV's Haar cascade face detector: the fallback (frontal faces only, no landmarks).

It needs OpenCV 4: OpenCV 5 dropped `cv2.CascadeClassifier` and the cascade files, which is one reason
CenterFace is the default. The image is scaled down to `_SEARCH_SIDE` px on its longer side first,
which keeps the cascade at a few ms on a CPU.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.errors import ModelLoadError, ModelMissingError
from vision.facedet.base import Faces

log = logging.getLogger(__name__)

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
#: Longest side of the image the cascade searches (px): its cost grows with the area.
_SEARCH_SIDE = 200


def haar_available() -> bool:
    """True where this OpenCV still has the cascade classifier (4.x)."""
    return hasattr(cv2, "CascadeClassifier")


def default_cascade_path() -> Path | None:
    """The frontal cascade shipped with opencv-python(-headless) 4.x; None where OpenCV has none."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    return Path(folder) / DEFAULT_CASCADE if folder else None


class HaarFaceDetector:
    """`cv2.CascadeClassifier.detectMultiScale` on an equalised grey image; largest face first."""

    def __init__(self, cascade: Path | None = None) -> None:
        self.path = cascade
        self._cascade: Any = None
        # CascadeClassifier is not documented as thread-safe; the pipeline and uploads share it.
        self._lock = threading.Lock()

    def load(self) -> None:
        if not haar_available():
            raise ModelLoadError(f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 removed it): set "
                                 "WATUS_VISION_FACE_DETECTOR=centerface, or install opencv-python-headless<5")
        path = self.path or default_cascade_path()
        if path is None or not path.is_file():
            raise ModelMissingError(f"Haar cascade not found: {path or DEFAULT_CASCADE} (WATUS_VISION_FACE_CASCADE); "
                                    "point the setting at a cascade XML, or set WATUS_VISION_FACE_DETECTOR=centerface")
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise ModelLoadError(f"not a Haar cascade: {path} (WATUS_VISION_FACE_CASCADE)")
        self.path, self._cascade = path, cascade
        log.info("face detector: Haar cascade %s", path.name)

    def ready(self) -> bool:
        return self._cascade is not None

    def detect(self, image: NDArray[np.uint8], min_size: int = 1) -> Faces:
        if self._cascade is None:
            raise RuntimeError("face detector not loaded")
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        scale = min(1.0, _SEARCH_SIDE / max(gray.shape))
        if scale < 1.0:
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))  # never a 0 side
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(12, round(min_size * scale))
        with self._lock:
            found = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                   minSize=(min_side, min_side))
        if len(found) == 0:
            return Faces.empty()
        rects = np.asarray(found, np.float32).reshape(-1, 4)
        rects = rects[np.argsort(-(rects[:, 2] * rects[:, 3]), kind="stable")]  # no scores: largest first
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / scale
        return Faces(boxes.astype(np.float32), np.ones(len(boxes), np.float32))

    def info(self) -> dict[str, object]:
        return {"detector": "haar", "model": str(self.path)}

    def close(self) -> None:
        self._cascade = None
