"""Pure logic of the vision service: image checks, letterbox, tracking, settings, the frame grabber."""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from vision.detector import backend_for
from vision.detector.base import Detections, class_filter
from vision.detector.yolo import decode, letterbox
from vision.errors import BadImageError, ModelLoadError, TooLargeError, UnsupportedImageError
from vision.faces import FaceObservation
from vision.grabber import FrameGrabber, SourceError
from vision.images import decode_image, image_info
from vision.settings import DetectorBackend, SourceKind, VisionSettings
from vision.sources import CaptureSource, FolderSource, source_factory, source_kind
from vision.tracking import FaceState, IouTracker, iou_matrix


def _jpeg(w: int = 64, h: int = 48) -> bytes:
    _, buf = cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))
    return buf.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w × h but holds almost no data (a decompression-bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"")) + \
        _png_chunk(b"IEND", b"")


# --- uploads


def test_image_info_reads_headers() -> None:
    assert image_info(_jpeg(64, 48)) == ("jpeg", 64, 48)
    _, png = cv2.imencode(".png", np.zeros((5, 7, 3), np.uint8))
    assert image_info(png.tobytes()) == ("png", 7, 5)
    _, bmp = cv2.imencode(".bmp", np.zeros((9, 11, 3), np.uint8))
    assert image_info(bmp.tobytes()) == ("bmp", 11, 9)
    _, webp = cv2.imencode(".webp", np.zeros((13, 17, 3), np.uint8))
    assert image_info(webp.tobytes()) == ("webp", 17, 13)


@pytest.mark.parametrize(("data", "error", "code"), [
    (b"", BadImageError, "empty_image"),
    (b"hello, this is text and not an image", UnsupportedImageError, "unsupported_image_type"),
    (_jpeg()[: len(_jpeg()) // 2], BadImageError, "truncated_image"),
    (_png_header_only(0, 10), BadImageError, "empty_image"),
])
def test_bad_uploads_are_refused_before_decoding(data: bytes, error: type[Exception], code: str) -> None:
    with pytest.raises(error) as info:
        decode_image(data, 10_000_000)
    assert getattr(info.value, "code", None) == code


def test_gigantic_image_refused_from_its_header() -> None:
    bomb = _png_header_only(40_000, 40_000)
    assert len(bomb) < 100
    with pytest.raises(TooLargeError, match="40000×40000"):
        decode_image(bomb, 40_000_000)


def test_decode_gives_bgr_frame() -> None:
    image = decode_image(_jpeg(32, 16), 10_000)
    assert image.shape == (16, 32, 3) and image.dtype == np.uint8


# --- YOLO geometry


def test_letterbox_and_decode_map_boxes_back_to_the_frame() -> None:
    frame = np.zeros((480, 1280, 3), np.uint8)  # wide: padded top and bottom
    blob, lb = letterbox(frame, 640)
    assert blob.shape == (1, 3, 640, 640) and blob.dtype == np.float32
    assert lb.scale == pytest.approx(0.5) and lb.pad_x == 0 and lb.pad_y == 200
    # One anchor at frame box (100, 40)-(300, 240) of class 2; the rest empty.
    out = np.zeros((1, 4 + 3, 10), np.float32)
    cx, cy, w, h = (200 * 0.5, 140 * 0.5 + 200, 200 * 0.5, 200 * 0.5)
    out[0, :4, 3] = (cx, cy, w, h)
    out[0, 4 + 2, 3] = 0.9
    out[0, :4, 4] = (cx + 1, cy, w, h)  # a near duplicate, suppressed by NMS
    out[0, 4 + 2, 4] = 0.8
    dets = decode(out, lb, 3, confidence=0.25, iou=0.7, max_detections=10)
    assert len(dets) == 1 and int(dets.class_ids[0]) == 2
    np.testing.assert_allclose(dets.boxes[0], [100, 40, 300, 240], atol=0.01)
    assert len(decode(out, lb, 3, confidence=0.25, iou=0.7, max_detections=10, keep_classes=np.array([0]))) == 0


def test_class_filter_names_unknown_classes() -> None:
    names = {0: "person", 1: "bus"}
    assert class_filter(names, ()) is None
    assert class_filter(names, ("Bus",)).tolist() == [1]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unicorn"):
        class_filter(names, ("unicorn",))


def test_backend_chosen_by_suffix() -> None:
    assert backend_for(Path("m.onnx")) is DetectorBackend.onnxruntime
    assert backend_for(Path("m.engine")) is DetectorBackend.ultralytics
    assert backend_for(Path("m.pt")) is DetectorBackend.ultralytics
    assert backend_for(Path("m.bin"), DetectorBackend.onnxruntime) is DetectorBackend.onnxruntime
    with pytest.raises(ModelLoadError, match="WATUS_VISION_DETECTOR_MODEL"):
        backend_for(Path("m.bin"))


# --- tracking


def _dets(boxes: list[list[float]], classes: list[int] | None = None) -> Detections:
    n = len(boxes)
    return Detections(np.array(boxes, np.float32).reshape(n, 4), np.full(n, 0.9, np.float32),
                      np.array(classes or [0] * n, np.int64))


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]], atol=1e-6)


def test_tracker_keeps_ids_of_moving_boxes_and_expires_lost_ones() -> None:
    tracker = IouTracker(iou_threshold=0.3, max_missed=2)
    first = tracker.update(_dets([[0, 0, 100, 200], [300, 0, 400, 200]]))
    moved = tracker.update(_dets([[305, 2, 405, 202], [8, 0, 108, 200]]))  # other order, moved a little
    assert moved == [first[1], first[0]]
    other_class = tracker.update(_dets([[8, 0, 108, 200]], [5]))  # same place, another class: a new track
    assert other_class[0] not in first
    for _ in range(3):
        tracker.update(_dets([]))
    assert tracker.tracks == {}


def test_faces_due_every_nth_frame_and_limited_per_frame() -> None:
    tracker = IouTracker()
    boxes: list[list[float]] = [[0, 0, 50, 100], [100, 0, 150, 100], [200, 0, 250, 100]]
    due_per_frame = []
    for _ in range(12):
        ids = tracker.update(_dets(boxes))
        due_per_frame.append(tracker.faces_due(ids, every_n=5, limit=2))
    assert due_per_frame[0] == [1, 2] and due_per_frame[1] == [3]  # the limit spreads the first look
    assert all(len(d) <= 2 for d in due_per_frame)
    counts = {tid: sum(tid in d for d in due_per_frame) for tid in (1, 2, 3)}
    assert counts == {1: 3, 2: 3, 3: 3}  # frames 1, 6, 11 (or 2, 7, 12): every 5th, never more


def test_face_state_smooths_attributes() -> None:
    state = FaceState()

    def obs(age: float, male: float, emotion: int) -> FaceObservation:
        scores = np.zeros(8, np.float32)
        scores[emotion] = 1.0
        return FaceObservation(np.array([0, 0, 10, 10], np.float32), age, 0.5,
                               np.array([1 - male, male], np.float32), scores)

    state.observe(obs(30, 1.0, 4), 0.5, frame_id=1)
    state.observe(obs(40, 0.0, 5), 0.5, frame_id=2)
    assert state.age == pytest.approx(35.0)
    assert state.gender is not None and state.gender.tolist() == pytest.approx([0.5, 0.5])
    assert state.emotion is not None and state.emotion[4] == pytest.approx(0.5)
    assert state.observations == 2 and state.last_frame_id == 2


# --- settings


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATUS_VISION_CLASSES", "person, bus")
    monkeypatch.setenv("WATUS_VISION_PORT", "9001")
    monkeypatch.setenv("WATUS_MODELS_CACHE_DIR", "/srv/models")
    s = VisionSettings()
    assert s.classes == ["person", "bus"] and s.port == 9001
    assert str(s.detector_path()) == "/srv/models/vision/yolo11n.onnx"
    assert "WATUS_VISION_EMOTION_MODEL" in s.model_files()


@pytest.mark.parametrize("bad", [{"image_size": 650}, {"confidence": 1.5}, {"reconnect_min_s": 5,
                                                                           "reconnect_max_s": 1}, {"port": 0}])
def test_settings_bounds(bad: dict[str, object]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        VisionSettings(**bad)  # type: ignore[arg-type]


def test_source_kind(tmp_path: object) -> None:
    assert source_kind("0") is SourceKind.camera
    assert source_kind("rtsp://cam/stream") is SourceKind.url
    assert source_kind(str(tmp_path)) is SourceKind.folder
    assert source_kind("/videos/hall.mp4") is SourceKind.file
    assert source_kind("3", SourceKind.file) is SourceKind.file


# --- the grabber, with fake sources (there is no camera here)


class FakeSource:
    """A finite or live source of numbered frames; counts reads so spinning would show."""

    def __init__(self, frames: int, *, finite: bool = True, fail_opens: int = 0, opens: list[float] | None = None):
        self.kind, self.description, self.finite = "fake", "fake source", finite
        self.frames, self.fail_opens = frames, fail_opens
        self.reads = 0
        self.opens = opens if opens is not None else []
        self._i = 0

    def open(self) -> None:
        self.opens.append(time.monotonic())
        if len(self.opens) <= self.fail_opens:
            raise SourceError("camera unplugged")

    def read(self) -> NDArray[np.uint8] | None:
        self.reads += 1
        if self._i >= self.frames:
            return None
        self._i += 1
        return np.full((4, 4, 3), self._i % 256, np.uint8)

    def rewind(self) -> bool:
        self._i = 0
        return True

    def native_fps(self) -> float | None:
        return None

    def close(self) -> None:
        pass


def _wait(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_grabber_keeps_only_the_newest_frame() -> None:
    src = FakeSource(10**9, finite=False)
    grabber = FrameGrabber(lambda: src)
    grabber.start()
    try:
        _wait(lambda: grabber.frames > 50)
        frame = grabber.next_frame(0, timeout=1)
        assert frame is not None and frame.id > 50  # not the first frame: the old ones were replaced
        assert grabber.dropped >= frame.id - 2
        later = grabber.next_frame(frame.id, timeout=1)
        assert later is not None and later.id > frame.id
    finally:
        grabber.stop()


def test_unpaced_file_is_read_on_demand_and_loops() -> None:
    src = FakeSource(3)
    grabber = FrameGrabber(lambda: src, loop=True, pace_fps=0)
    grabber.start()
    try:
        ids = []
        last = 0
        for _ in range(7):
            frame = grabber.next_frame(last, timeout=2)
            assert frame is not None
            ids.append(frame.id)
            last = frame.id
        assert ids == list(range(1, 8))  # every frame, none dropped, past the end of the 3-frame file
        assert grabber.dropped == 0
        reads = src.reads
        time.sleep(0.2)
        assert src.reads - reads <= 1  # waits for the consumer instead of decoding ahead
    finally:
        grabber.stop()


def test_ended_file_reports_and_does_not_spin() -> None:
    src = FakeSource(3)
    grabber = FrameGrabber(lambda: src, loop=False, pace_fps=1000)
    grabber.start()
    try:
        _wait(lambda: grabber.state == "ended")
        reads = src.reads
        time.sleep(0.3)
        assert src.reads == reads and grabber.frames == 3
        assert grabber.next_frame(3, timeout=0.1) is None
    finally:
        grabber.stop()


def test_failing_camera_is_reopened_with_backoff() -> None:
    opens: list[float] = []
    made: list[FakeSource] = []

    def factory() -> FakeSource:
        made.append(FakeSource(10**9, finite=False, fail_opens=4, opens=opens))
        return made[-1]

    reconnected = threading.Event()
    grabber = FrameGrabber(factory, reconnect_min_s=0.1, reconnect_max_s=0.6, on_reconnect=reconnected.set)
    grabber.start()
    try:
        _wait(lambda: grabber.failures >= 2)
        status = grabber.status()
        assert status.state == "reconnecting" and status.last_error == "camera unplugged"
        assert status.retry_in_s is not None
        assert reconnected.wait(5)
        _wait(lambda: grabber.frames > 0)
        gaps = np.diff(opens[:5])
        assert gaps[1] > gaps[0] * 1.5 and gaps[2] > gaps[1] * 1.5, gaps  # doubling waits
        assert gaps.max() < 0.6 + 0.25  # capped at reconnect_max_s
        assert grabber.status().state == "ok" and grabber.reconnects == 1
    finally:
        grabber.stop()


def test_empty_file_backs_off_instead_of_spinning() -> None:
    opens: list[float] = []
    grabber = FrameGrabber(lambda: FakeSource(0, opens=opens), loop=True, reconnect_min_s=0.05,
                           reconnect_max_s=0.2)
    grabber.start()
    try:
        time.sleep(0.6)
        assert 2 <= len(opens) <= 8  # a few reopen attempts, not thousands
        assert grabber.status().last_error == "fake source gave no frames"
    finally:
        grabber.stop()


class CrashingSource(FakeSource):
    """A live source whose decoder raises (a driver bug, not a clean end of stream)."""

    def read(self) -> NDArray[np.uint8] | None:
        if self.reads >= 2:
            raise RuntimeError("decoder crashed")
        return super().read()


def test_crashing_read_is_logged_with_traceback_and_reopened(caplog: pytest.LogCaptureFixture) -> None:
    opens: list[float] = []
    grabber = FrameGrabber(lambda: CrashingSource(10**9, finite=False, opens=opens), reconnect_min_s=0.05,
                           reconnect_max_s=0.1)
    with caplog.at_level(logging.WARNING, logger="vision.grabber"):
        grabber.start()
        try:
            _wait(lambda: len(opens) >= 2)
            assert grabber.status().last_error == "fake source: decoder crashed"
        finally:
            grabber.stop()
    crashes = [r for r in caplog.records if r.exc_info and "decoder crashed" in r.getMessage()]
    assert crashes and crashes[0].exc_info is not None and crashes[0].exc_info[0] is RuntimeError


def test_source_factory_builds_the_kind_with_its_values(tmp_path: Path) -> None:
    folder = source_factory(str(tmp_path))()
    assert isinstance(folder, FolderSource) and folder.folder == tmp_path
    camera = source_factory("2", camera_width=320, camera_height=240, camera_fps=15)()
    assert isinstance(camera, CaptureSource) and camera.kind == "camera" and camera.target == "2"
    assert camera._size == (320, 240) and camera._fps == 15
    video = source_factory(" 7 ", SourceKind.file)()
    assert isinstance(video, CaptureSource) and video.kind == "file" and video.finite
