"""Prometheus series of the vision service, on the app's own registry (see `watus.core.metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from watus.core import metrics as m

STAGES = ("capture_wait", "preprocess", "inference", "postprocess", "tracking", "faces", "total")


class VisionMetrics:
    """FPS, per-stage latency histograms, dropped frames, reconnects, faces and uploads."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage_seconds = m.latency_histogram("vision_stage_seconds", "Time per frame in each pipeline stage.",
                                                 registry, labels=("stage",))
        self.frames = m.counter("vision_frames_processed", "Frames that became a scene.", registry)
        self.dropped = m.counter("vision_frames_dropped", "Frames replaced by a newer one before the pipeline "
                                 "took them.", registry)
        self.reconnects = m.counter("vision_source_reconnects", "Times the frame source was reopened after a "
                                    "failure.", registry)
        self.fps = m.gauge("vision_fps", "Scenes per second over the FPS window.", registry)
        self.source_up = m.gauge("vision_source_up", "1 while the frame source delivers, else 0.", registry)
        self.faces = m.counter("vision_faces_classified", "Faces classified (age, gender, emotion).", registry)
        self.face_misses = m.counter("vision_face_searches_empty", "Face searches in a person box that found no "
                                     "face.", registry)
        self.detect_requests = m.counter("vision_detect_requests", "POST /v1/detect requests by outcome.", registry,
                                         labels=("outcome",))
        self.pipeline_errors = m.counter("vision_pipeline_errors", "Frames the pipeline failed on.", registry)
        # Create the label children up front so every stage shows (at 0) before the first frame.
        for stage in STAGES:
            self.stage_seconds.labels(stage)
