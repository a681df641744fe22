"""Ultralytics detector: a TensorRT `.engine` on the robot (or a `.pt` checkpoint anywhere).

On the Orin the engine is the one `models/export_yolo.py` built (FP16, 640); Ultralytics loads it with
TensorRT and runs pre- and post-processing in torch on the GPU. Ultralytics (and torch) are imported
only here, when such a model is configured: the ONNX path never needs them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vision.detector.base import Detections, DetectorConfig, DetectTimings, class_filter
from vision.errors import ModelLoadError, ModelMissingError

log = logging.getLogger(__name__)


class UltralyticsDetector:
    """YOLO through `ultralytics.YOLO(...).predict`; callers are serialised by a lock."""

    def __init__(self, path: Path, config: DetectorConfig) -> None:
        self.path = path
        self.config = config
        self._model: Any = None
        self._names: dict[int, str] = {}
        self._classes: list[int] | None = None
        # Ultralytics' predictor keeps per-call state: the pipeline and uploads must take turns.
        self._lock = threading.Lock()

    @property
    def names(self) -> dict[int, str]:
        return self._names

    def load(self) -> None:
        if not self.path.exists():
            raise ModelMissingError(f"detector model not found: {self.path} (WATUS_VISION_DETECTOR_MODEL); run "
                                    "`watus models setup`, or build an engine with models/export_yolo.py")
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise ModelLoadError(f"{self.path.suffix} models need the `ultralytics` package (and torch; TensorRT "
                                 "for .engine): install them, or use the ONNX export (`watus models setup`)") from e
        try:
            model = YOLO(str(self.path), task="detect")
        except Exception as e:  # ultralytics raises plain exceptions for unreadable files
            raise ModelLoadError(f"could not load {self.path}: {e}") from e
        names = {int(k): str(v) for k, v in dict(model.names or {}).items()}
        try:
            keep = class_filter(names, self.config.classes)
        except ValueError as e:
            raise ModelLoadError(str(e)) from e
        self._model, self._names = model, names
        self._classes = keep.tolist() if keep is not None else None
        log.info("detector %s through ultralytics: %d classes", self.path.name, len(names))

    def ready(self) -> bool:
        return self._model is not None

    def detect(self, image: NDArray[np.uint8]) -> tuple[Detections, DetectTimings]:
        if self._model is None:
            raise RuntimeError("detector not loaded")
        kwargs: dict[str, Any] = {"imgsz": self.config.image_size, "conf": self.config.confidence,
                                  "iou": self.config.iou, "max_det": self.config.max_detections,
                                  "classes": self._classes, "verbose": False}
        if self.config.device is not None:
            kwargs["device"] = self.config.device
        with self._lock:
            result = self._model.predict(image, **kwargs)[0]
        boxes = result.boxes
        dets = Detections(boxes.xyxy.cpu().numpy().astype(np.float32), boxes.conf.cpu().numpy().astype(np.float32),
                          boxes.cls.cpu().numpy().astype(np.int64))
        order = np.argsort(-dets.scores, kind="stable")
        dets = Detections(dets.boxes[order], dets.scores[order], dets.class_ids[order])
        speed = result.speed or {}
        return dets, DetectTimings(float(speed.get("preprocess") or 0.0), float(speed.get("inference") or 0.0),
                                   float(speed.get("postprocess") or 0.0))

    def info(self) -> dict[str, object]:
        return {"engine": "ultralytics", "model": str(self.path), "input_size": self.config.image_size,
                "classes": len(self._names)}

    def close(self) -> None:
        self._model = None
