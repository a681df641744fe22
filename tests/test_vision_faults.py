"""Faults of the frame source, seen through the real app on 127.0.0.1 (uvicorn in a thread).

There is no camera here, so the camera that unplugs and comes back is a fake (the only fake: models,
HTTP and the pipeline are real). A camera index with no device and a video file that ends go through
OpenCV for real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import uvicorn
from numpy.typing import NDArray

from tests.helpers import free_port
from vision.app import create_app
from vision.samples import sample_image, write_demo_video
from vision.settings import VisionSettings
from vision.sources import FrameSource, SourceError


@contextmanager
def serve(settings: VisionSettings, source: Callable[[], FrameSource] | None = None) -> Iterator[str]:
    """The vision app on a free port, healthy (models loaded), stopped afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, source=source), host="127.0.0.1", port=port,
                                           log_config=None, timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _health(url).get("status") in ("ok", "degraded"), 60, "service never became healthy")
        yield url
    finally:
        server.should_exit = True
        thread.join(15)


def _health(url: str) -> dict[str, Any]:
    try:
        return dict(httpx.get(url + "/health", timeout=5).json())
    except httpx.HTTPError:
        return {}


def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


class FlakyCamera:
    """A live camera that delivers `frames` frames, unplugs, refuses `refusals` reopens, then works."""

    def __init__(self, image: NDArray[np.uint8], frames: int, refusals: int, log: list[float]) -> None:
        self.kind, self.description, self.finite = "camera", "fake camera 0", False
        self.image, self.frames, self.refusals, self.log = image, frames, refusals, log
        self.served = 0

    def open(self) -> None:
        self.log.append(time.monotonic())
        if 1 < len(self.log) <= 1 + self.refusals:
            raise SourceError("could not open camera 0 (unplugged)")

    def read(self) -> NDArray[np.uint8] | None:
        time.sleep(0.05)  # a 20 fps camera
        if len(self.log) == 1 and self.served >= self.frames:
            return None  # the cable came out
        self.served += 1
        return self.image

    def rewind(self) -> bool:
        return False

    def native_fps(self) -> float | None:
        return 20.0

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def bus() -> NDArray[np.uint8]:
    try:
        return cv2.resize(cv2.imread(str(sample_image("bus.jpg"))), (480, 640))
    except FileNotFoundError as e:
        pytest.fail(str(e))


def test_unplugged_camera_is_reopened_with_backoff(bus: NDArray[np.uint8]) -> None:
    opens: list[float] = []
    settings = VisionSettings(faces=False, reconnect_min_s=0.2, reconnect_max_s=1.0, threads=2)
    with serve(settings, lambda: FlakyCamera(bus, frames=10, refusals=3, log=opens)) as url:
        _until(lambda: httpx.get(url + "/v1/scene").status_code == 200, 30, "no scene from the camera")
        before = httpx.get(url + "/v1/scene").json()["frame_id"]
        states: list[dict[str, Any]] = []
        _until(lambda: states.append(_health(url)) or states[-1]["source"]["failures"] >= 2, 30,
               "the unplugged camera never showed in /health")
        down = states[-1]
        assert down["status"] == "degraded" and down["source"]["state"] == "reconnecting"
        assert "unplugged" in down["source"]["last_error"] or "read failed" in down["source"]["last_error"]
        assert down["source"]["retry_in_s"] is not None
        stale = httpx.get(url + "/v1/scene", params={"max_age_ms": 150})
        assert stale.status_code == 503 and stale.json()["error"]["code"] == "stale_scene"
        _until(lambda: _health(url)["source"]["state"] == "ok" and _health(url)["source"]["reconnects"] >= 1, 30,
               "the camera was not reopened")
        _until(lambda: httpx.get(url + "/v1/scene").json()["frame_id"] > before, 30, "no frames after reopening")
        # Open 1 worked; the read failure waited 0.2 s before open 2; opens 2-4 were refused, each
        # followed by a doubled wait capped at 1.0 s; open 5 worked.
        waits = np.diff(opens[1:5])
        np.testing.assert_allclose(waits, [0.4, 0.8, 1.0], atol=0.2)
        metrics = httpx.get(url + "/metrics").text
        assert "vision_source_reconnects_total 1.0" in metrics


def test_missing_camera_device_shows_in_health() -> None:
    settings = VisionSettings(source="97", faces=False, reconnect_min_s=0.1, reconnect_max_s=0.5, threads=1)
    with serve(settings) as url:
        _until(lambda: _health(url)["source"]["failures"] >= 2, 20, "no failed opens")
        health = _health(url)
        assert health["status"] == "degraded" and health["source"]["kind"] == "camera"
        assert "could not open camera 97" in health["source"]["last_error"]
        r = httpx.get(url + "/v1/scene")
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_scene"
        # The models are up all the same: uploads work without a camera.
        r = httpx.post(url + "/v1/detect", content=sample_image("bus.jpg").read_bytes(), timeout=30)
        assert r.status_code == 200 and r.json()["objects"]


def test_video_that_ends_reports_and_keeps_the_last_scene(tmp_path: Path) -> None:
    video = write_demo_video(tmp_path / "short.avi", frames_per_part=4, fps=25)
    settings = VisionSettings(source=str(video), loop=False, source_fps=50, faces=False, threads=2)
    with serve(settings) as url:
        _until(lambda: _health(url)["source"]["state"] == "ended", 30, "the video never ended")
        health = _health(url)
        assert health["status"] == "ok" and health["source"]["frames"] == 12
        # The last frame stays the newest, so the pipeline gets to it however far behind it was.
        _until(lambda: httpx.get(url + "/v1/scene").json().get("frame_id") == 12, 30, "last frame never processed")
        scene = httpx.get(url + "/v1/scene").json()
        time.sleep(0.5)
        assert _health(url)["source"]["frames"] == 12  # no rereading at the end
        assert httpx.get(url + "/v1/scene").json()["seq"] == scene["seq"]
