"""The detector interface every engine implements, and what it returns.

An engine takes one BGR frame and gives boxes in that frame's pixels with its own stage timings; the
pipeline owns tracking, faces and the scene. Keeping the interface this small is what lets the same
pipeline run a TensorRT engine on the robot and ONNX Runtime on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class DetectorConfig:
    """What the pipeline asks of every engine, already validated."""

    confidence: float = 0.25
    iou: float = 0.7
    image_size: int = 640
    max_detections: int = 100
    #: Class names to keep (empty: all).
    classes: tuple[str, ...] = ()
    threads: int = 2
    #: ONNX Runtime providers in order (empty: the best available).
    providers: tuple[str, ...] = ()
    #: Ultralytics device (.engine/.pt).
    device: str | None = None


@dataclass
class Detections:
    """Boxes of one frame: xyxy in frame pixels, scores, class ids; rows sorted by score."""

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    class_ids: NDArray[np.int64]

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class DetectTimings:
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0


@runtime_checkable
class Detector(Protocol):
    """A YOLO engine: load once, then detect frame by frame (thread-safe for one caller at a time)."""

    @property
    def names(self) -> dict[int, str]: ...

    def load(self) -> None: ...

    def ready(self) -> bool: ...

    def detect(self, image: NDArray[np.uint8]) -> tuple[Detections, DetectTimings]: ...

    def info(self) -> dict[str, object]: ...

    def close(self) -> None: ...


def class_filter(names: dict[int, str], wanted: tuple[str, ...]) -> NDArray[np.int64] | None:
    """Class ids of the wanted names (None: keep all). Raises ValueError naming unknown classes."""
    if not wanted:
        return None
    by_name = {n.lower(): i for i, n in names.items()}
    unknown = [w for w in wanted if w.lower() not in by_name]
    if unknown:
        raise ValueError(f"unknown classes {unknown} (WATUS_VISION_CLASSES); the model knows: "
                         f"{', '.join(names.values())}")
    return np.array(sorted(by_name[w.lower()] for w in wanted), dtype=np.int64)
