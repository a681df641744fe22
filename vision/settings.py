"""Settings of the vision service (`WATUS_VISION_*`).

Defaults run offline on a CPU: camera 0, the ONNX models that `watus models setup` put in the model
cache (`WATUS_MODELS_CACHE_DIR`), faces on (CenterFace). On the robot the env file points
`DETECTOR_MODEL` and `FACE_DETECTOR_MODEL` at TensorRT `.engine` files and the classifiers at their
engines' ONNX twins (see models/README.md).
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from vision import modelsetup
from watus.core.config import DEFAULT_PORTS, ServiceSettings
from watus.core.modelstore import cache_dir


class SourceKind(str, enum.Enum):
    """What `source` is; `auto` tells by its form (digits: camera, URL, folder, else a video file)."""

    auto = "auto"
    camera = "camera"
    file = "file"
    url = "url"
    folder = "folder"


class DetectorBackend(str, enum.Enum):
    """Which engine runs the detector; `auto` picks by the model file (.onnx → onnxruntime, .engine/.pt →
    ultralytics)."""

    auto = "auto"
    onnxruntime = "onnxruntime"
    ultralytics = "ultralytics"


class FaceDetectorKind(str, enum.Enum):
    """Which face detector searches the head of each person box."""

    centerface = "centerface"
    haar = "haar"


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class VisionSettings(ServiceSettings):
    """Everything the vision service reads from the environment (prefix `WATUS_VISION_`)."""

    model_config = SettingsConfigDict(env_prefix="WATUS_VISION_")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(DEFAULT_PORTS["vision"], ge=1, le=65535, description="TCP port.")

    # --- frame source
    source: str = Field("0", min_length=1, description="Camera index (V4L2), video file, RTSP/HTTP URL or "
                        "image folder.")
    source_kind: SourceKind = Field(SourceKind.auto, description="What `source` is: auto, camera, file, url, "
                                    "folder.")
    loop: bool = Field(True, description="Start a video file or image folder again at its end (else the "
                       "source reports `ended` and the last scene stays).")
    source_fps: float | None = Field(None, ge=0, le=1000, description="Pace of a video file or folder: frames "
                                     "per second (empty: the file's own rate, 10 for a folder; 0: as fast as "
                                     "the pipeline takes them, for benchmarks).")
    camera_width: int | None = Field(None, ge=16, le=8192, description="Requested camera width (px).")
    camera_height: int | None = Field(None, ge=16, le=8192, description="Requested camera height (px).")
    camera_fps: float | None = Field(None, gt=0, le=1000, description="Requested camera frame rate.")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="First wait before reopening a failed source.")
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="Longest wait between reopen attempts "
                                   "(the wait doubles up to this).")

    # --- detector
    detector_model: Path | None = Field(None, description="YOLO model: .onnx (ONNX Runtime), .engine (TensorRT) "
                                        "or .pt (Ultralytics). Empty: yolo11n.onnx in the model cache.")
    detector_backend: DetectorBackend = Field(DetectorBackend.auto, description="auto (by the file suffix), "
                                              "onnxruntime or ultralytics.")
    confidence: float = Field(0.25, ge=0.0, le=1.0, description="Minimum detection confidence.")
    iou: float = Field(0.7, gt=0.0, le=1.0, description="IoU threshold of non-maximum suppression.")
    classes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Class names to keep, comma separated (empty: all 80 COCO classes).")
    image_size: int = Field(640, ge=32, le=4096, description="Detector input size (square, multiple of 32). A "
                            "fixed-size ONNX file's own size wins (logged); a static TensorRT .engine of another "
                            "size is refused at load.")
    max_detections: int = Field(100, ge=1, le=1000, description="Most objects kept per frame.")
    threads: int = Field(default_factory=_default_threads, ge=1, le=256,
                         description="CPU threads per ONNX Runtime session (default: all cores, at most 8).")
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="ONNX Runtime execution providers in order, comma separated (empty: "
        "TensorRT, CUDA, then CPU, whichever are available).")
    device: str | None = Field(None, description="Ultralytics device for .engine/.pt models (e.g. 0 or cpu; "
                               "empty: Ultralytics' choice).")

    # --- faces
    faces: bool = Field(True, description="Find faces inside person boxes and classify age, gender, emotion.")
    face_every_n: int = Field(10, ge=1, le=10_000, description="Classify a tracked person's face at most every "
                              "Nth frame (attributes are smoothed in between).")
    max_faces_per_frame: int = Field(2, ge=1, le=100, description="Faces classified in one frame at most (the "
                                     "longest-waiting people first), so a crowd does not stall a frame.")
    face_min_size: int = Field(24, ge=8, le=1024, description="Smallest face searched for (px).")
    face_detector: FaceDetectorKind = Field(FaceDetectorKind.centerface, description="Face detector: centerface "
                                            "(a CNN: tilted, three-quarter and small faces, 5 landmarks that level "
                                            "the eyes of the crop) or haar (OpenCV 4's frontal cascade; fewer faces).")
    face_detector_model: Path | None = Field(None, description="CenterFace model: .onnx (ONNX Runtime) or .engine "
                                             "(TensorRT, built on the robot from the ONNX file). Empty: "
                                             "centerface.onnx in the model cache.")
    face_confidence: float = Field(0.5, gt=0.0, lt=1.0, description="Least CenterFace score of a face.")
    face_search_size: int = Field(256, ge=64, le=1280, description="CenterFace input budget (px, multiple of 32): "
                                  "the head of a person box is scaled to about this side squared; larger finds "
                                  "smaller faces and costs more. A static .engine fixes it: its own size wins.")
    face_cascade: Path | None = Field(None, description="OpenCV Haar cascade XML (face_detector=haar). Empty: "
                                      "haarcascade_frontalface_default.xml shipped with OpenCV.")
    age_model: Path | None = Field(None, description="Age ONNX model. Empty: age-v1.onnx in the model cache.")
    gender_model: Path | None = Field(None, description="Gender ONNX model. Empty: gender-v1.onnx in the cache.")
    emotion_model: Path | None = Field(None, description="Face-emotion YOLO ONNX model (320). Empty: "
                                       "emotion-yolo11n-320.onnx in the model cache.")
    attribute_smoothing: float = Field(0.5, gt=0.0, le=1.0, description="Weight of a new face observation in "
                                       "a person's smoothed age/gender/emotion (1: no smoothing).")

    # --- tracking
    track_iou: float = Field(0.3, gt=0.0, le=1.0, description="Least IoU that continues a track.")
    track_max_missed: int = Field(15, ge=0, le=10_000, description="Frames a track survives without a match.")

    # --- output and API
    fps_window_s: float = Field(5.0, gt=0.1, le=600, description="Window of the FPS figure (s).")
    max_upload_bytes: int = Field(20 * 2**20, ge=1024, le=2**31, description="Largest `POST /v1/detect` "
                                  "body (bytes); more gets 413.")
    max_image_pixels: int = Field(40_000_000, ge=1024, le=1_000_000_000, description="Largest image (width × "
                                  "height) accepted by `POST /v1/detect`, checked before decoding.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="Quality of `GET /v1/frame.jpg`.")
    stream_max_fps: float = Field(30.0, gt=0, le=1000, description="Most scenes per second sent on one SSE stream.")
    warmup: bool = Field(True, description="Run the models once before reporting healthy.")
    worker_nice: int = Field(10, ge=0, le=19, description="Niceness added to the inference, grabber and upload "
                             "threads, so the HTTP event loop gets a core at once when a request comes (0: off).")
    switch_interval_ms: float = Field(1.0, gt=0, le=100, description="Python's GIL switch interval in the "
                                      "service process (default 5 ms): shorter lets the event loop in sooner "
                                      "while the pipeline thread runs Python code.")

    @field_validator("classes", "providers", mode="before")
    @classmethod
    def _split_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @field_validator("image_size", "face_search_size")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError("must be a multiple of 32")
        return v

    @model_validator(mode="after")
    def _reconnect_order(self) -> VisionSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self

    # Resolved model paths: an unset setting means the file `watus models setup` made in the cache.
    def detector_path(self) -> Path:
        return (self.detector_model or cache_dir() / modelsetup.DETECTOR_ONNX).expanduser()

    def face_detector_path(self) -> Path:
        return (self.face_detector_model or cache_dir() / modelsetup.CENTERFACE_ONNX).expanduser()

    def age_path(self) -> Path:
        return (self.age_model or cache_dir() / modelsetup.AGE_ONNX).expanduser()

    def gender_path(self) -> Path:
        return (self.gender_model or cache_dir() / modelsetup.GENDER_ONNX).expanduser()

    def emotion_path(self) -> Path:
        return (self.emotion_model or cache_dir() / modelsetup.EMOTION_ONNX).expanduser()

    def model_files(self) -> dict[str, Path]:
        """Each model file the settings need, keyed by the env var that names it."""
        files = {"WATUS_VISION_DETECTOR_MODEL": self.detector_path()}
        if self.faces:
            files |= {"WATUS_VISION_AGE_MODEL": self.age_path(), "WATUS_VISION_GENDER_MODEL": self.gender_path(),
                      "WATUS_VISION_EMOTION_MODEL": self.emotion_path()}
            if self.face_detector is FaceDetectorKind.centerface:
                files["WATUS_VISION_FACE_DETECTOR_MODEL"] = self.face_detector_path()
            elif self.face_cascade is not None:
                files["WATUS_VISION_FACE_CASCADE"] = self.face_cascade.expanduser()
        return files
