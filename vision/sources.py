"""Frame sources: a camera, a video file, a stream URL or an image folder, and the factory over them.

Each kind implements `vision.grabber.FrameSource`; the grabber thread (`vision.grabber`) opens one
through the factory, reads it and reopens it after a failure. The grabber's names are re-exported
here, so `vision.sources` stays the one import for code that builds and reads sources.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.grabber import Frame, FrameGrabber, FrameSource, SourceError, SourceStatus
from vision.settings import SourceKind
from vision.threads import lower_priority

__all__ = ["FOLDER_FPS", "IMAGE_SUFFIXES", "CaptureSource", "FolderSource", "Frame", "FrameGrabber", "FrameSource",
           "SourceError", "SourceStatus", "lower_priority", "source_factory", "source_kind"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FOLDER_FPS = 10.0


class CaptureSource:
    """OpenCV VideoCapture: a V4L2 camera index, a video file or an RTSP/HTTP URL."""

    def __init__(self, kind: str, target: str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None) -> None:
        self.kind = kind
        self.target = target
        self.description = f"{kind} {target}"
        self.finite = kind == "file"
        self._size = (width, height)
        self._fps = fps
        self._cap: Any = None

    def open(self) -> None:
        if self.kind == "camera":
            cap = cv2.VideoCapture(int(self.target), cv2.CAP_V4L2)
        elif self.kind == "url":
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG)
        else:
            if not Path(self.target).is_file():
                raise SourceError(f"video file not found: {self.target} (WATUS_VISION_SOURCE)")
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"could not open {self.description}")
        if self.kind == "camera":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not one a buffer held back
            width, height = self._size
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if self._fps:
                cap.set(cv2.CAP_PROP_FPS, self._fps)
        self._cap = cap

    def read(self) -> NDArray[np.uint8] | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        return image if ok and image is not None and image.size else None

    def rewind(self) -> bool:
        if self._cap is None or not self.finite:
            return False
        if self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            return True
        self.close()  # some backends cannot seek: reopen instead
        try:
            self.open()
        except SourceError:
            return False
        return True

    def native_fps(self) -> float | None:
        fps = float(self._cap.get(cv2.CAP_PROP_FPS)) if self._cap is not None else 0.0
        return fps if 0 < fps < 1000 else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource:
    """Images of a folder in name order, one per frame."""

    def __init__(self, folder: str) -> None:
        self.kind = "folder"
        self.folder = Path(folder)
        self.description = f"folder {folder}"
        self.finite = True
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"image folder not found: {self.folder} (WATUS_VISION_SOURCE)")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        self._next = 0

    def read(self) -> NDArray[np.uint8] | None:
        while self._next < len(self._files):
            path = self._files[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return np.asarray(image, dtype=np.uint8)
            log.warning("skipping unreadable image %s", path)
        return None

    def rewind(self) -> bool:
        self._next = 0
        return True

    def native_fps(self) -> float | None:
        return FOLDER_FPS

    def close(self) -> None:
        self._files = []


def source_kind(source: str, kind: SourceKind = SourceKind.auto) -> SourceKind:
    """What a `source` setting names, told by its form when `kind` is auto."""
    if kind is not SourceKind.auto:
        return kind
    if source.strip().isdigit():
        return SourceKind.camera
    if "://" in source:
        return SourceKind.url
    if Path(source).expanduser().is_dir():
        return SourceKind.folder
    return SourceKind.file


def source_factory(source: str, kind: SourceKind = SourceKind.auto, *, camera_width: int | None = None,
                   camera_height: int | None = None, camera_fps: float | None = None) -> Callable[[], FrameSource]:
    """A function that makes a fresh (unopened) source; called on every (re)open.

    `source` and `kind` are the `source`/`source_kind` settings; the camera values apply to a camera only.
    """
    kind = source_kind(source, kind)
    target = str(Path(source).expanduser()) if kind in (SourceKind.file, SourceKind.folder) else source.strip()

    def make() -> FrameSource:
        if kind is SourceKind.folder:
            return FolderSource(target)
        return CaptureSource(kind.value, target, width=camera_width, height=camera_height, fps=camera_fps)

    return make
