"""The pipeline thread: newest frame → detector → tracker → faces (when due) → latest scene.

It runs in its own thread because every stage is blocking CPU/GPU work; the event loop only ever
reads the result. Each scene is serialised to JSON once, here, and published as bytes together with
its frame, so `GET /v1/scene` is a pointer read and a memcpy (well under a millisecond) however slow
the models are, and every SSE client shares the one serialisation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from vision.detector.base import Detections, Detector
from vision.faces import FaceAnalyzer
from vision.grabber import Frame, FrameGrabber
from vision.metrics import VisionMetrics
from vision.protocol import AgeEstimate, Box, DetectedObject, LabelScore, Person, Scene, StageTimings
from vision.threads import lower_priority
from vision.tracking import FaceState, IouTracker

log = logging.getLogger(__name__)

PERSON = "person"
#: Most people whose faces an uploaded image gets classified (largest boxes first).
UPLOAD_MAX_FACES = 10


@dataclass
class Published:
    """One scene as served: the pydantic object, its JSON bytes, and the frame it came from."""

    scene: Scene
    body: bytes
    image: NDArray[np.uint8] | None
    #: Encoded JPEGs of the frame, filled on first request (plain and annotated).
    jpeg: dict[bool, bytes] = field(default_factory=dict)


class SceneBoard:
    """The latest published scene, handed from the pipeline thread to the event loop."""

    def __init__(self) -> None:
        self._latest: Published | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self.closed = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's loop (called from it) so waiters can be woken from the thread."""
        self._loop = loop
        self._event = asyncio.Event()

    @property
    def latest(self) -> Published | None:
        return self._latest

    def publish(self, item: Published) -> None:
        self._latest = item  # one reference assignment: readers see the old or the new, never half
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def close(self) -> None:
        """Wake every waiter for the last time (streams end with [DONE]); call from the loop."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    async def wait_newer(self, seq: int, timeout: float) -> Published | None:
        """The latest scene once its seq is above `seq`; None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._latest
            if item is not None and item.scene.seq > seq:
                return item
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._event is None:
                return None
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except asyncio.TimeoutError:
                return None


def _box(b: NDArray[np.float32], width: int, height: int) -> Box:
    return Box(x1=round(float(b[0]) / width, 5), y1=round(float(b[1]) / height, 5),
               x2=round(float(b[2]) / width, 5), y2=round(float(b[3]) / height, 5))


def person_of(box: NDArray[np.float32], score: float, track_id: int | None, face: FaceState | None,
              labels: list[str], width: int, height: int) -> Person:
    """A person of the scene with the (smoothed) attributes of their face state."""
    p = Person(track_id=track_id, confidence=round(score, 4), box=_box(box, width, height))
    if face is None or face.observations == 0:
        return p
    assert face.box is not None and face.gender is not None and face.emotion is not None and face.age is not None
    p.face = _box(face.box, width, height)
    p.age = AgeEstimate(years=round(face.age, 1), confidence=round(face.age_confidence or 0.0, 3))
    g = int(np.argmax(face.gender))
    p.gender = LabelScore(label=("female", "male")[g], confidence=round(float(face.gender[g]), 3))
    e = int(np.argmax(face.emotion))
    p.emotion = LabelScore(label=labels[e], confidence=round(float(face.emotion[e]), 3))
    p.emotion_scores = {label: round(float(s), 3) for label, s in zip(labels, face.emotion, strict=False)}
    p.faces_seen = face.observations
    p.attributes_frame_id = face.last_frame_id
    return p


def objects_of(dets: Detections, names: dict[int, str], track_ids: list[int] | None, width: int,
               height: int) -> list[DetectedObject]:
    return [DetectedObject(label=names.get(int(c), str(int(c))), class_id=int(c), confidence=round(float(s), 4),
                           box=_box(b, width, height), track_id=track_ids[i] if track_ids is not None else None)
            for i, (b, s, c) in enumerate(zip(dets.boxes, dets.scores, dets.class_ids, strict=False))]


def person_class(names: dict[int, str]) -> int | None:
    return next((i for i, n in names.items() if n == PERSON), None)


def analyze_image(image: NDArray[np.uint8], detector: Detector, faces: FaceAnalyzer | None) -> Scene:
    """One uploaded image → its scene: no tracking, every person's face classified (up to a limit)."""
    h, w = image.shape[:2]
    now_ns, now_unix = time.monotonic_ns(), time.time()
    t0 = time.perf_counter()
    dets, t = detector.detect(image)
    person_id = person_class(detector.names)
    t1 = time.perf_counter()
    people: list[Person] = []
    persons = [i for i in range(len(dets)) if int(dets.class_ids[i]) == person_id]
    largest = sorted(persons, key=lambda i: -float((dets.boxes[i, 2] - dets.boxes[i, 0]) *
                                                   (dets.boxes[i, 3] - dets.boxes[i, 1])))[:UPLOAD_MAX_FACES]
    for i in persons:
        state: FaceState | None = None
        if faces is not None and i in largest:
            obs = faces.analyze(image, dets.boxes[i])
            if obs is not None:
                state = FaceState()
                state.observe(obs, 1.0, 0)
        labels = faces.emotion_labels if faces is not None else []
        people.append(person_of(dets.boxes[i], float(dets.scores[i]), None, state, labels, w, h))
    t2 = time.perf_counter()
    timings = StageTimings(capture_wait_ms=0.0, preprocess_ms=round(t.preprocess_ms, 3),
                           inference_ms=round(t.inference_ms, 3), postprocess_ms=round(t.postprocess_ms, 3),
                           faces_ms=round((t2 - t1) * 1e3, 3), total_ms=round((t2 - t0) * 1e3, 3))
    return Scene(frame_id=0, seq=0, source="upload", width=w, height=h, captured_ns=now_ns,
                 result_ns=time.monotonic_ns(), captured_unix=now_unix, objects=objects_of(dets, detector.names, None,
                                                                                           w, h),
                 people=people, timings=timings, fps=0.0)


@dataclass(frozen=True)
class PipelineConfig:
    faces: bool = True
    face_every_n: int = 10
    max_faces_per_frame: int = 2
    attribute_smoothing: float = 0.5
    track_iou: float = 0.3
    track_max_missed: int = 15
    fps_window_s: float = 5.0
    nice: int = 0


class Pipeline:
    """Owns the tracker and the per-frame loop; publishes to a SceneBoard."""

    def __init__(self, grabber: FrameGrabber, detector: Detector, faces: FaceAnalyzer | None, config: PipelineConfig,
                 board: SceneBoard, metrics: VisionMetrics, source_name: str) -> None:
        self.grabber = grabber
        self.detector = detector
        self.faces = faces if config.faces else None
        self.config = config
        self.board = board
        self.metrics = metrics
        self.source_name = source_name
        self.tracker = IouTracker(config.track_iou, config.track_max_missed)
        self.seq = 0
        self._times: deque[float] = deque()
        self._person = person_class(detector.names)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vision-pipeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def fps(self) -> float:
        times = self._times
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def _run(self) -> None:
        lower_priority(self.config.nice)
        last_id = 0
        while not self._stop.is_set():
            t0 = time.perf_counter()
            frame = self.grabber.next_frame(last_id, timeout=0.5)
            if frame is None:
                continue
            last_id = frame.id
            wait_ms = (time.perf_counter() - t0) * 1e3
            try:
                scene = self.process(frame, wait_ms)
                body = scene.model_dump_json().encode()
            except Exception:  # one bad frame must not end the service; the error is counted and logged
                log.exception("pipeline failed on frame %d", frame.id)
                self.metrics.pipeline_errors.inc()
                self._stop.wait(0.1)
                continue
            self.board.publish(Published(scene=scene, body=body, image=frame.image))

    def process(self, frame: Frame, capture_wait_ms: float) -> Scene:
        """Run one frame through every stage and build its scene (also the metrics of each stage)."""
        image = frame.image
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        dets, t = self.detector.detect(image)
        t1 = time.perf_counter()
        ids = self.tracker.update(dets)
        t2 = time.perf_counter()
        person_rows = [i for i in range(len(dets)) if int(dets.class_ids[i]) == self._person]
        if self.faces is not None and person_rows:
            due = set(self.tracker.faces_due([ids[i] for i in person_rows], self.config.face_every_n,
                                             self.config.max_faces_per_frame))
            for tid in due:
                track = self.tracker.tracks[tid]
                obs = self.faces.analyze(image, track.box)
                if obs is None:
                    self.metrics.face_misses.inc()
                    continue
                track.face.observe(obs, self.config.attribute_smoothing, frame.id)
                self.metrics.faces.inc()
        t3 = time.perf_counter()
        labels = self.faces.emotion_labels if self.faces is not None else []
        people = [person_of(dets.boxes[i], float(dets.scores[i]), ids[i], self.tracker.tracks[ids[i]].face, labels,
                            w, h) for i in person_rows]
        self.seq += 1
        now = time.perf_counter()
        self._times.append(now)
        while self._times and now - self._times[0] > self.config.fps_window_s:
            self._times.popleft()
        timings = StageTimings(capture_wait_ms=round(capture_wait_ms, 3), preprocess_ms=round(t.preprocess_ms, 3),
                               inference_ms=round(t.inference_ms, 3), postprocess_ms=round(t.postprocess_ms, 3),
                               tracking_ms=round((t2 - t1) * 1e3, 3), faces_ms=round((t3 - t2) * 1e3, 3),
                               total_ms=round((now - t0) * 1e3, 3))
        self._observe(timings)
        return Scene(frame_id=frame.id, seq=self.seq, source=self.source_name, width=w, height=h,
                     captured_ns=frame.captured_ns, result_ns=time.monotonic_ns(), captured_unix=frame.captured_unix,
                     objects=objects_of(dets, self.detector.names, ids, w, h), people=people, timings=timings,
                     fps=round(self.fps, 2))

    def _observe(self, t: StageTimings) -> None:
        m = self.metrics
        for stage, ms in (("capture_wait", t.capture_wait_ms), ("preprocess", t.preprocess_ms),
                          ("inference", t.inference_ms), ("postprocess", t.postprocess_ms),
                          ("tracking", t.tracking_ms), ("faces", t.faces_ms), ("total", t.total_ms)):
            m.stage_seconds.labels(stage).observe(ms / 1e3)
        m.frames.inc()
        m.fps.set(self.fps)
