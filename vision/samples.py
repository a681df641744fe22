"""Sample images and a synthetic camera video, for tests, `watus bench vision` and demos.

There is no camera in CI or on a laptop in a train, so the service is exercised with a video file
made here from Ultralytics' sample images (copied into the model cache by `watus models setup`):
the bus street scene panned slowly, the two-person zidane.jpg zoomed slowly (people move a little
between frames, as under a real camera), and drawn frames with moving shapes and no objects at all.
Nothing binary is kept in the repository; the video is written where the caller asks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.modelsetup import SAMPLE_IMAGES
from watus.core.modelstore import cache_dir

SAMPLES = {Path(rel).name: rel for rel in SAMPLE_IMAGES}


def sample_image(name: str) -> Path:
    """Path of a sample image in the model cache; FileNotFoundError saying to run setup if missing."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    path = cache_dir() / SAMPLES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `watus models setup` (it copies the sample images)")
    return path


def _fit(image: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """The image scaled to cover width × height, centre-cropped (no padding: like a camera frame)."""
    h, w = image.shape[:2]
    s = max(width / w, height / h)
    resized = cv2.resize(image, (max(width, round(w * s)), max(height, round(h * s))), interpolation=cv2.INTER_AREA)
    y = (resized.shape[0] - height) // 2
    x = (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[y:y + height, x:x + width])


def _pan(image: NDArray[np.uint8], n: int, width: int, height: int) -> Iterator[NDArray[np.uint8]]:
    """A window of the frame's aspect sliding down across a tall image (or right across a wide one)."""
    base = _fit(image, width, round(height * 1.25)) if image.shape[0] > image.shape[1] else \
        _fit(image, round(width * 1.25), height)
    for i in range(n):
        t = i / max(1, n - 1)
        y = round((base.shape[0] - height) * t)
        x = round((base.shape[1] - width) * t)
        yield base[y:y + height, x:x + width]


def _zoom(image: NDArray[np.uint8], n: int, width: int, height: int) -> Iterator[NDArray[np.uint8]]:
    """A slow zoom in (to 115%) on the centre."""
    base = _fit(image, width, height)
    for i in range(n):
        z = 1.0 + 0.15 * i / max(1, n - 1)
        m = np.array([[z, 0, (1 - z) * width / 2], [0, z, (1 - z) * height / 2]], np.float32)
        yield np.asarray(cv2.warpAffine(base, m, (width, height), borderMode=cv2.BORDER_REFLECT), np.uint8)


def _drawn(n: int, width: int, height: int) -> Iterator[NDArray[np.uint8]]:
    """Frames with a moving rectangle and circle on a plain wall: nothing a COCO detector should name."""
    for i in range(n):
        frame = np.full((height, width, 3), (90, 110, 120), np.uint8)
        x = round((width - 120) * i / max(1, n - 1))
        cv2.rectangle(frame, (x, height // 3), (x + 120, height // 3 + 80), (40, 40, 200), -1)
        cv2.circle(frame, (width - x - 40, 2 * height // 3), 40, (200, 180, 40), -1)
        yield frame


def demo_frames(frames_per_part: int = 30, width: int = 640, height: int = 480) -> Iterator[NDArray[np.uint8]]:
    """Bus pan, then zidane zoom, then drawn frames: `3 × frames_per_part` BGR frames."""
    bus = np.asarray(cv2.imread(str(sample_image("bus.jpg"))), np.uint8)
    zidane = np.asarray(cv2.imread(str(sample_image("zidane.jpg"))), np.uint8)
    yield from _pan(bus, frames_per_part, width, height)
    yield from _zoom(zidane, frames_per_part, width, height)
    yield from _drawn(frames_per_part, width, height)


def write_demo_video(path: Path, *, frames_per_part: int = 30, fps: float = 10.0, width: int = 640,
                     height: int = 480) -> Path:
    """Write the demo frames as an MJPG .avi (OpenCV's own encoder: no codec packages needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    try:
        for frame in demo_frames(frames_per_part, width, height):
            writer.write(frame)
    finally:
        writer.release()
    return path
