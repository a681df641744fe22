"""The face detector interface and what it returns.

A face detector takes one BGR image (in the service: the head region of one person box) and returns
every face in it, in that image's pixels, best first. CenterFace also gives five landmarks per face,
which the classifiers use to level the eyes of the crop; Haar gives none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

#: Landmark rows: the eye on the image's left, the other eye, the nose tip, the mouth corners (image-left first).
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class Faces:
    """Faces of one image: xyxy boxes [N, 4], scores [N] (1.0 where the detector has none), landmarks
    [N, 5, 2] as (x, y) or None; rows sorted by score."""

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    landmarks: NDArray[np.float32] | None = None

    @classmethod
    def empty(cls, landmarks: bool = False) -> Faces:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 5, 2), np.float32) if landmarks else None)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, keep: NDArray[np.bool_] | NDArray[np.int64]) -> Faces:
        """The rows in `keep` (a mask or indices)."""
        return Faces(self.boxes[keep], self.scores[keep], None if self.landmarks is None else self.landmarks[keep])

    def shifted(self, dx: float, dy: float) -> Faces:
        """The same faces in the pixels of an image this one was cut from at (dx, dy)."""
        offset = np.array([dx, dy], np.float32)
        return Faces(self.boxes + np.tile(offset, 2), self.scores.copy(),
                     None if self.landmarks is None else self.landmarks + offset)


@runtime_checkable
class FaceDetector(Protocol):
    """Load once, then `detect` image by image (thread-safe: the pipeline and uploads share one)."""

    def load(self) -> None: ...

    def ready(self) -> bool: ...

    def detect(self, image: NDArray[np.uint8], min_size: int = 1) -> Faces:
        """Faces at least `min_size` px on their longer side, in `image`'s pixels, best first."""
        ...

    def info(self) -> dict[str, object]: ...

    def close(self) -> None: ...
