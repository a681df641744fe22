"""The vision service's contract: the scene (`GET /v1/scene`, its SSE stream, `POST /v1/detect`).

Boxes are normalised to the frame (0..1, x1 y1 x2 y2) so a consumer needs no frame size to use them;
the frame's width and height are given for those who want pixels. Timestamps come twice: on the
machine-wide monotonic clock (`time.monotonic_ns()`, the clock every Watus process uses for spans, so
the agent can subtract them from its own) and as Unix time for people and logs. The vision service
builds these models; the agent validates what it receives with them (`Scene.model_validate`).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Box(BaseModel):
    """A box in normalised frame coordinates (0..1)."""

    x1: float
    y1: float
    x2: float
    y2: float


class DetectedObject(BaseModel):
    label: str
    class_id: int
    confidence: float = Field(description="Detector score, 0..1.")
    box: Box
    track_id: int | None = Field(None, description="Stable id across frames (None for a single image).")


class LabelScore(BaseModel):
    label: str
    confidence: float = Field(description="Probability (gender) or score (emotion) of the label, 0..1.")


class AgeEstimate(BaseModel):
    years: float = Field(description="Expected age in years.")
    confidence: float = Field(description="Probability that the true age is within ±5 years of `years`.")


class Person(BaseModel):
    track_id: int | None = None
    confidence: float
    box: Box
    face: Box | None = Field(None, description="Last face box found for this person (this frame or earlier).")
    age: AgeEstimate | None = None
    gender: LabelScore | None = None
    emotion: LabelScore | None = None
    emotion_scores: dict[str, float] | None = Field(None, description="Smoothed score of every emotion class.")
    faces_seen: int = Field(0, description="Face observations the attributes are smoothed over.")
    attributes_frame_id: int | None = Field(None, description="Frame of the latest face observation.")


class StageTimings(BaseModel):
    """Milliseconds spent on this frame by each stage."""

    capture_wait_ms: float = Field(description="Waiting for a frame newer than the last one processed.")
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    tracking_ms: float = 0.0
    faces_ms: float = 0.0
    total_ms: float = Field(description="Preprocess to scene ready (without the capture wait).")


class Scene(BaseModel):
    """What the camera shows now."""

    frame_id: int = Field(description="Number of the frame at the source (increases; gaps are dropped frames).")
    seq: int = Field(description="Number of this scene since the service started.")
    source: str
    width: int
    height: int
    captured_ns: int = Field(description="Capture time, time.monotonic_ns() of this machine.")
    result_ns: int = Field(description="Time the scene was ready, time.monotonic_ns().")
    captured_unix: float = Field(description="Capture time, Unix seconds.")
    objects: list[DetectedObject]
    people: list[Person]
    timings: StageTimings
    fps: float = Field(description="Scenes per second over the last `fps_window_s`.")
