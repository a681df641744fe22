"""The grabber thread: it owns a frame source and holds its newest frame for the pipeline.

The grabber keeps exactly one frame: the newest. A camera is read as fast as it delivers (so its
driver buffer never holds stale frames) and a frame the pipeline did not take in time is replaced
and counted as dropped. A file or folder is paced at its own frame rate (or `source_fps`), or, with
`source_fps=0`, read one frame each time the pipeline takes one, so a benchmark measures the
pipeline and not the decoder racing it. A source that fails is reopened with exponential backoff;
one that ends loops or reports `ended` and waits: no path spins on a dead source.

This module also defines what the grabber needs of a source (`FrameSource`, `SourceError`); the
source kinds themselves (camera, file, URL, folder) are in `vision.sources`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from vision.threads import lower_priority

log = logging.getLogger(__name__)


class SourceError(Exception):
    """A source could not be opened (or is unusable, e.g. a folder without images)."""


@dataclass(frozen=True)
class Frame:
    """One captured frame; `id` counts every frame read from the source, taken or dropped."""

    id: int
    image: NDArray[np.uint8]
    captured_ns: int
    captured_unix: float


class FrameSource(Protocol):
    """Something frames come from. `finite` sources (files, folders) end; live ones fail instead."""

    kind: str
    description: str
    finite: bool

    def open(self) -> None: ...

    def read(self) -> NDArray[np.uint8] | None: ...

    def rewind(self) -> bool: ...

    def native_fps(self) -> float | None: ...

    def close(self) -> None: ...


@dataclass
class SourceStatus:
    kind: str
    description: str
    state: str
    frames: int
    dropped: int
    reconnects: int
    failures: int
    last_error: str | None
    retry_in_s: float | None


class FrameGrabber:
    """A thread that owns the source and holds its newest frame for the pipeline."""

    def __init__(self, factory: Callable[[], FrameSource], *, loop: bool = True, pace_fps: float | None = None,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 10.0,
                 on_drop: Callable[[], None] | None = None, on_reconnect: Callable[[], None] | None = None,
                 nice: int = 0) -> None:
        self._factory = factory
        self._nice = nice
        self.loop = loop
        self.pace_fps = pace_fps
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._on_drop = on_drop
        self._on_reconnect = on_reconnect
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame: Frame | None = None
        self._taken = True
        self._kind, self._description = "", ""
        self.state = "connecting"
        self.frames = 0
        self.dropped = 0
        self.reconnects = 0
        self.failures = 0
        self.last_error: str | None = None
        self._retry_at: float | None = None
        self._delay = reconnect_min_s

    # --- consumer side
    def next_frame(self, after_id: int, timeout: float) -> Frame | None:
        """The newest frame with an id above `after_id`, waiting up to `timeout` s; None if none came."""
        with self._cond:
            if not self._cond.wait_for(lambda: (self._frame is not None and self._frame.id > after_id)
                                       or self._stop.is_set(), timeout=timeout):
                return None
            if self._frame is None or self._frame.id <= after_id:
                return None
            self._taken = True
            self._cond.notify_all()
            return self._frame

    def status(self) -> SourceStatus:
        retry = None if self._retry_at is None else max(0.0, self._retry_at - time.monotonic())
        return SourceStatus(self._kind, self._description, self.state, self.frames, self.dropped, self.reconnects,
                            self.failures, self.last_error, retry)

    # --- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vision-grabber", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.state = "stopped"

    # --- the thread
    def _publish(self, image: NDArray[np.uint8]) -> None:
        with self._cond:
            if not self._taken and self._frame is not None:
                self.dropped += 1
                if self._on_drop:
                    self._on_drop()
            self.frames += 1
            self._frame = Frame(self.frames, image, time.monotonic_ns(), time.time())
            self._taken = False
            self._cond.notify_all()

    def _failed(self, message: str, delay: float, error: Exception | None = None) -> None:
        """Count a failure and schedule the reopen; an unexpected `error` is logged with its traceback."""
        self.failures += 1
        self.last_error = message
        self.state = "reconnecting"
        self._retry_at = time.monotonic() + delay
        log.warning("%s; retrying in %.1f s", message, delay, exc_info=error)

    def _open(self) -> FrameSource | None:
        try:
            source = self._factory()
        except Exception as e:  # a factory that cannot even build the source: same backoff as a failed open
            self._failed(f"could not create the source: {e}", self._delay, e)
            return None
        self._kind, self._description = source.kind, source.description
        try:
            source.open()
        except SourceError as e:
            source.close()
            self._failed(str(e), self._delay)
            return None
        except Exception as e:  # OpenCV backends raise cv2.error and friends for broken devices
            source.close()
            self._failed(f"could not open {source.description}: {e}", self._delay, e)
            return None
        if self.failures and self.state == "reconnecting":
            self.reconnects += 1
            if self._on_reconnect:
                self._on_reconnect()
        self.state, self._retry_at = "ok", None
        log.info("source open: %s", source.description)
        return source

    def _backoff(self) -> bool:
        """Wait the current delay (False if stopping meanwhile) and double it for next time."""
        stopped = self._stop.wait(self._delay)
        self._delay = min(self._delay * 2, self.reconnect_max_s)
        return not stopped

    def _run(self) -> None:
        lower_priority(self._nice)
        self._delay = self.reconnect_min_s
        source: FrameSource | None = None
        fps: float | None = None
        next_due = time.monotonic()
        since_rewind = 0
        try:
            while not self._stop.is_set():
                if source is None:
                    source = self._open()
                    if source is None:
                        if not self._backoff():
                            break
                        continue
                    fps = self.pace_fps if self.pace_fps is not None else (source.native_fps() or 25.0)
                    next_due = time.monotonic()
                    since_rewind = 0
                try:
                    image = source.read()
                except Exception as e:  # a driver or decoder error: treat as a lost source, reopen later
                    source.close()
                    self._failed(f"{source.description}: {e}", self._delay, e)
                    source = None
                    if not self._backoff():
                        break
                    continue
                if image is None:
                    source, keep_going = self._handle_end(source, since_rewind)
                    since_rewind = 0
                    if not keep_going:
                        break
                    continue
                since_rewind += 1
                self._delay = self.reconnect_min_s
                self._publish(image)
                if source.finite:
                    next_due = self._pace(fps, next_due)
        finally:
            if source is not None:
                source.close()

    def _handle_end(self, source: FrameSource, since_rewind: int) -> tuple[FrameSource | None, bool]:
        """A read gave nothing: loop a finite source, report its end, or reopen a live one."""
        if source.finite:
            if self.loop and since_rewind > 0 and source.rewind():
                return source, True
            if self.loop:  # nothing since the last rewind: an empty or broken file; back off, never spin
                source.close()
                self._failed(f"{source.description} gave no frames", self._delay)
                return None, self._backoff()
            self.state = "ended"
            log.info("source ended: %s", source.description)
            self._stop.wait()
            return source, False
        source.close()
        self._failed(f"{source.description}: read failed (disconnected?)", self._delay)
        return None, self._backoff()

    def _pace(self, fps: float | None, next_due: float) -> float:
        """Wait until the next frame of a file is due, or (fps 0) until the pipeline took this one."""
        if fps:
            next_due += 1.0 / fps
            wait = next_due - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
            elif wait < -1.0:
                next_due = time.monotonic()  # fell far behind (a paused process): do not burst to catch up
            return next_due
        with self._cond:
            self._cond.wait_for(lambda: self._taken or self._stop.is_set())
        return next_due
