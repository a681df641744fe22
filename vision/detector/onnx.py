"""ONNX Runtime detector: a YOLO ONNX export, no torch at run time.

CPU by default; where the installed onnxruntime has the TensorRT or CUDA execution provider (an
`onnxruntime-gpu` wheel), those run first. Class names and the input size come from the metadata
Ultralytics writes into the export, so any YOLO detection export works, including a -seg export
(its mask coefficients are ignored).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vision.detector.base import Detections, DetectorConfig, DetectTimings, class_filter
from vision.detector.yolo import decode, letterbox, metadata, open_session
from vision.errors import ModelLoadError, ModelMissingError

log = logging.getLogger(__name__)


class OnnxDetector:
    """YOLO through ONNX Runtime; `detect` is safe from one thread at a time per instance."""

    def __init__(self, path: Path, config: DetectorConfig) -> None:
        self.path = path
        self.config = config
        self._session: Any = None
        self._input = "images"
        self._names: dict[int, str] = {}
        self._size = config.image_size
        self._keep: NDArray[np.int64] | None = None

    @property
    def names(self) -> dict[int, str]:
        return self._names

    def load(self) -> None:
        if not self.path.is_file():
            raise ModelMissingError(f"detector model not found: {self.path} (WATUS_VISION_DETECTOR_MODEL); run "
                                    "`watus models setup` or point the setting at a YOLO .onnx/.engine/.pt file")
        session = open_session(self.path, self.config.threads, self.config.providers)
        names, size = metadata(session)
        outputs = session.get_outputs()
        channels = outputs[0].shape[1]
        if not names and isinstance(channels, int):
            names = {i: str(i) for i in range(channels - 4)}
        if not names or (isinstance(channels, int) and channels < 4 + len(names)):
            raise ModelLoadError(f"{self.path} is not a YOLO detection export (output {outputs[0].shape})")
        if size is not None and size != self.config.image_size:
            log.info("%s has a fixed input of %d px; WATUS_VISION_IMAGE_SIZE=%d does not apply", self.path.name,
                     size, self.config.image_size)
        try:
            self._keep = class_filter(names, self.config.classes)
        except ValueError as e:
            raise ModelLoadError(str(e)) from e
        self._session, self._names, self._size = session, names, size or self.config.image_size
        self._input = session.get_inputs()[0].name
        log.info("detector %s: %d classes, %d px, providers %s", self.path.name, len(names), self._size,
                 session.get_providers())

    def ready(self) -> bool:
        return self._session is not None

    def detect(self, image: NDArray[np.uint8]) -> tuple[Detections, DetectTimings]:
        if self._session is None:
            raise RuntimeError("detector not loaded")
        t0 = time.perf_counter()
        blob, lb = letterbox(image, self._size)
        t1 = time.perf_counter()
        output = self._session.run(None, {self._input: blob})[0]
        t2 = time.perf_counter()
        dets = decode(output, lb, len(self._names), confidence=self.config.confidence, iou=self.config.iou,
                      max_detections=self.config.max_detections, keep_classes=self._keep)
        t3 = time.perf_counter()
        return dets, DetectTimings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def info(self) -> dict[str, object]:
        return {"engine": "onnxruntime", "model": str(self.path), "input_size": self._size,
                "classes": len(self._names),
                "providers": self._session.get_providers() if self._session is not None else []}

    def close(self) -> None:
        self._session = None
