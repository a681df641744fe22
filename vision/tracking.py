"""A small IoU tracker: stable ids across frames, and per-person face attributes smoothed over time.

Greedy matching of this frame's boxes to last frame's tracks of the same class by IoU is enough at
camera rates (boxes move little between frames) and costs microseconds; a track lives on for
`max_missed` frames without a match, so a person hidden for a moment keeps their id and attributes.
The tracker also decides whose face is due: never-seen people first, then the longest waiting, at
most every Nth frame per person, so face classification costs a bounded, small share of the frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from vision.detector.base import Detections
from vision.faces import FaceObservation


def iou_matrix(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """IoU of every box in `a` [N,4] with every box in `b` [M,4] (xyxy)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


@dataclass
class FaceState:
    """Smoothed attributes of one person (exponential moving averages of the observations)."""

    box: NDArray[np.float32] | None = None
    age: float | None = None
    age_confidence: float | None = None
    gender: NDArray[np.float32] | None = None
    emotion: NDArray[np.float32] | None = None
    observations: int = 0
    #: Tracker frame of the last attempt (found a face or not) and of the last observation.
    last_attempt: int | None = None
    last_frame_id: int | None = None

    def observe(self, obs: FaceObservation, alpha: float, frame_id: int) -> None:
        def ema(old: float | None, new: float) -> float:
            return new if old is None else alpha * new + (1 - alpha) * old

        def ema_vec(old: NDArray[np.float32] | None, new: NDArray[np.float32]) -> NDArray[np.float32]:
            return new.copy() if old is None else (alpha * new + (1 - alpha) * old).astype(np.float32)

        self.box = obs.box
        self.age = ema(self.age, obs.age_years)
        self.age_confidence = ema(self.age_confidence, obs.age_confidence)
        self.gender = ema_vec(self.gender, obs.gender_probs)
        self.emotion = ema_vec(self.emotion, obs.emotion_scores)
        self.observations += 1
        self.last_frame_id = frame_id


@dataclass
class Track:
    id: int
    class_id: int
    box: NDArray[np.float32]
    missed: int = 0
    face: FaceState = field(default_factory=FaceState)


class IouTracker:
    """Frame-to-frame IoU matching; `update` returns the track id of every detection."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 15) -> None:
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.tracks: dict[int, Track] = {}
        self.frame = 0
        self._next_id = 1

    def update(self, dets: Detections) -> list[int]:
        self.frame += 1
        track_list = list(self.tracks.values())
        ids: list[int | None] = [None] * len(dets)
        if track_list and len(dets):
            old = np.stack([t.box for t in track_list])
            ious = iou_matrix(old, dets.boxes)
            same_class = np.array([t.class_id for t in track_list])[:, None] == dets.class_ids[None, :]
            ious = np.where(same_class, ious, 0.0)
            pairs = np.argwhere(ious >= self.iou_threshold)
            order = np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="stable")
            used_tracks: set[int] = set()
            for ti, di in pairs[order]:
                if ti in used_tracks or ids[di] is not None:
                    continue
                track = track_list[ti]
                track.box = dets.boxes[di].copy()
                track.missed = 0
                used_tracks.add(int(ti))
                ids[di] = track.id
        matched = {i for i in ids if i is not None}
        for track in track_list:
            if track.id not in matched:
                track.missed += 1
                if track.missed > self.max_missed:
                    del self.tracks[track.id]
        out: list[int] = []
        for di, tid in enumerate(ids):
            if tid is None:
                tid = self._next_id
                self._next_id += 1
                self.tracks[tid] = Track(tid, int(dets.class_ids[di]), dets.boxes[di].copy())
            out.append(tid)
        return out

    def faces_due(self, person_ids: list[int], every_n: int, limit: int) -> list[int]:
        """Which of these people get a face classification this frame (never-seen first, then oldest)."""
        due = []
        for tid in person_ids:
            last = self.tracks[tid].face.last_attempt
            if last is None or self.frame - last >= every_n:
                due.append((last if last is not None else -1, tid))
        due.sort()
        chosen = [tid for _, tid in due[:limit]]
        for tid in chosen:
            self.tracks[tid].face.last_attempt = self.frame
        return chosen
