"""Detector selection: one pure function from settings to an engine, heavy imports inside each branch."""

from __future__ import annotations

from pathlib import Path

from vision.detector.base import Detections, Detector, DetectorConfig, DetectTimings
from vision.errors import ModelLoadError
from vision.settings import DetectorBackend, VisionSettings

__all__ = ["DetectTimings", "Detections", "Detector", "DetectorConfig", "backend_for", "detector_config",
           "select_detector"]

_ULTRALYTICS_SUFFIXES = (".engine", ".pt")


def backend_for(path: Path, backend: DetectorBackend = DetectorBackend.auto) -> DetectorBackend:
    """The engine for a model file: the setting if given, else by suffix (.onnx / .engine, .pt)."""
    if backend is not DetectorBackend.auto:
        return backend
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return DetectorBackend.onnxruntime
    if suffix in _ULTRALYTICS_SUFFIXES:
        return DetectorBackend.ultralytics
    raise ModelLoadError(f"cannot tell the engine of {path.name} (WATUS_VISION_DETECTOR_MODEL): use a .onnx, "
                         ".engine or .pt file, or set WATUS_VISION_DETECTOR_BACKEND")


def detector_config(settings: VisionSettings) -> DetectorConfig:
    return DetectorConfig(confidence=settings.confidence, iou=settings.iou, image_size=settings.image_size,
                          max_detections=settings.max_detections, classes=tuple(settings.classes),
                          threads=settings.threads, providers=tuple(settings.providers), device=settings.device)


def select_detector(settings: VisionSettings, path: Path | None = None) -> Detector:
    """The detector the settings ask for (not loaded yet: call `load()` in a worker thread)."""
    path = path or settings.detector_path()
    config = detector_config(settings)
    if backend_for(path, settings.detector_backend) is DetectorBackend.ultralytics:
        from vision.detector.ultralytics_engine import UltralyticsDetector

        return UltralyticsDetector(path, config)
    from vision.detector.onnx import OnnxDetector

    return OnnxDetector(path, config)
