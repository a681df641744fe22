"""Ultralytics detector: a TensorRT `.engine` on the robot (or a `.pt` checkpoint anywhere).

On the Orin the engine is the one `models/export_yolo.py` built (FP16, 640); Ultralytics loads it with
TensorRT and runs pre- and post-processing in torch on the GPU. Ultralytics (and torch) are imported
only here, when such a model is configured: the ONNX path never needs them.

A static engine takes only the input size it was exported at (Ultralytics asserts it at the first
frame), so `load` reads that size (`engine_input`) and refuses a different `WATUS_VISION_IMAGE_SIZE`
with a message that names both.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vision.detector.base import Detections, DetectorConfig, DetectTimings, class_filter
from vision.errors import ModelLoadError, ModelMissingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineInput:
    """The input a TensorRT engine takes: its export size, or with `dynamic` the largest it accepts."""

    height: int
    width: int
    dynamic: bool
    #: Where the size was read.
    source: str


def engine_input(model: Any, path: Path) -> EngineInput | None:
    """The engine's input size, from Ultralytics' loaded TensorRT backend where the model kept one (older
    Ultralytics keep the predictor `model.names` set up), else from the metadata header Ultralytics' export
    writes before the engine (a 4-byte little-endian length, then JSON with `imgsz` and `args.dynamic`);
    None for an engine without that header (trtexec-built)."""
    backend = getattr(getattr(model, "predictor", None), "model", None)
    binding = (getattr(backend, "bindings", None) or {}).get("images")
    if binding is not None and len(getattr(binding, "shape", ())) == 4:
        height, width = (int(d) for d in binding.shape[2:])
        return EngineInput(height, width, bool(getattr(backend, "dynamic", False)), "the engine's input binding")
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(4), byteorder="little")
            meta = json.loads(f.read(size).decode("utf-8")) if 0 < size < 1 << 20 else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    imgsz = meta.get("imgsz") if isinstance(meta, dict) else None
    if isinstance(imgsz, str):  # some exports write it as text: "[640, 640]"
        try:
            imgsz = json.loads(imgsz)
        except ValueError:
            return None
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    if not (isinstance(imgsz, list) and len(imgsz) == 2 and all(isinstance(d, int) for d in imgsz)):
        return None
    args = meta.get("args") if isinstance(meta, dict) else None
    dynamic = bool(args.get("dynamic", False)) if isinstance(args, dict) else False
    return EngineInput(imgsz[0], imgsz[1], dynamic, "the engine's export metadata")


def check_image_size(found: EngineInput, image_size: int, path: Path) -> None:
    """Raise ModelLoadError unless a square `image_size` input fits the engine."""
    size = f"{found.height}x{found.width}"
    if found.dynamic:
        if image_size <= min(found.height, found.width):
            return
        raise ModelLoadError(
            f"WATUS_VISION_IMAGE_SIZE={image_size} is larger than {path.name} accepts (a dynamic TensorRT engine of "
            f"at most {size} px, from {found.source}): set WATUS_VISION_IMAGE_SIZE to at most "
            f"{min(found.height, found.width)}, or export the engine again at {image_size}")
    if (found.height, found.width) == (image_size, image_size):
        return
    advice = (f"set WATUS_VISION_IMAGE_SIZE={found.height}" if found.height == found.width
              else "export a square engine")
    raise ModelLoadError(
        f"WATUS_VISION_IMAGE_SIZE={image_size} does not match {path.name}, a static TensorRT engine exported at "
        f"{size} px (from {found.source}): {advice}, or export the engine again at {image_size} "
        f"(watus models export-yolo MODEL.pt --format engine --imgsz {image_size})")


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
        if self.path.suffix == ".engine":
            found = engine_input(model, self.path)
            if found is None:
                log.warning("%s carries no Ultralytics metadata: its input size is unknown, and a "
                            "WATUS_VISION_IMAGE_SIZE (%d) other than its export size fails at the first frame",
                            self.path.name, self.config.image_size)
            else:
                check_image_size(found, self.config.image_size, self.path)
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
