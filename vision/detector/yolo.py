"""YOLO pre- and post-processing in NumPy/OpenCV, shared by the ONNX detector and the emotion model.

It reproduces Ultralytics' own steps so an ONNX export gives the boxes `model.predict` gives (to about
0.1 px on the sample images): a centred square letterbox padded with grey 114, RGB scaled to 0..1,
then confidence filtering on the best class and class-aware NMS. Also the ONNX Runtime session
factory, which picks TensorRT/CUDA providers where the installed onnxruntime has them.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.detector.base import Detections
from vision.errors import ModelLoadError

log = logging.getLogger(__name__)

PAD_VALUE = 114
_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square input: scale and padding, to map boxes back."""

    scale: float
    pad_x: int
    pad_y: int
    width: int
    height: int


def letterbox(image: NDArray[np.uint8], size: int) -> tuple[NDArray[np.float32], Letterbox]:
    """BGR frame → NCHW float32 RGB blob of `size`², as Ultralytics' LetterBox(auto=False) does it."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    # At least a pixel each way: a very thin image (say 1 × 5000) would otherwise scale to a side of 0.
    new_w, new_h = max(1, round(w * r)), max(1, round(h * r))
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (w, h) else image
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    blob = np.asarray(cv2.dnn.blobFromImage(padded, scalefactor=1 / 255.0, swapRB=True), dtype=np.float32)
    return blob, Letterbox(scale=r, pad_x=left, pad_y=top, width=w, height=h)


def best_class(output: NDArray[np.float32], num_classes: int) -> tuple[NDArray[np.float32], NDArray[np.float32],
                                                                     NDArray[np.int64]]:
    """Raw head output [1, 4 + nc (+ masks), anchors] → (cxcywh [A, 4], best score [A], class [A])."""
    pred = output[0]
    cls = pred[4:4 + num_classes]
    return pred[:4].T, cls.max(axis=0), cls.argmax(axis=0).astype(np.int64)


def decode(output: NDArray[np.float32], lb: Letterbox, num_classes: int, *, confidence: float, iou: float,
           max_detections: int, keep_classes: NDArray[np.int64] | None = None) -> Detections:
    """Head output → boxes in frame pixels after confidence filter, class filter and class-aware NMS."""
    xywh, scores, ids = best_class(output, num_classes)
    keep = scores > confidence
    if keep_classes is not None:
        keep &= np.isin(ids, keep_classes)
    if not keep.any():
        return Detections.empty()
    xywh, scores, ids = xywh[keep], scores[keep], ids[keep]
    x1y1 = xywh[:, :2] - xywh[:, 2:] / 2
    # NMSBoxesBatched wants (x, y, w, h) and runs per class, like Ultralytics' class offsets.
    rects = np.concatenate([x1y1, xywh[:, 2:]], axis=1)
    kept = cv2.dnn.NMSBoxesBatched(rects.tolist(), scores.tolist(), ids.tolist(), confidence, iou)
    idx = np.asarray(kept, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-scores[idx], kind="stable")][:max_detections]
    boxes = np.concatenate([x1y1[idx], x1y1[idx] + xywh[idx, 2:]], axis=1)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - lb.pad_x) / lb.scale).clip(0, lb.width)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - lb.pad_y) / lb.scale).clip(0, lb.height)
    return Detections(boxes.astype(np.float32), scores[idx].astype(np.float32), ids[idx])


def providers_for(wanted: tuple[str, ...], cache_dir: Path, trt_options: dict[str, str] | None = None) -> list[Any]:
    """ONNX Runtime providers: the wanted ones (all must exist) or the best available; `trt_options` are
    added to the TensorRT provider's (e.g. the profile shapes of a model with a dynamic input)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if wanted:
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ModelLoadError(f"ONNX Runtime providers {missing} are not available (WATUS_VISION_PROVIDERS); "
                                 f"this onnxruntime has {available}")
        order = list(wanted)
    else:
        order = [p for p in _PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]
    out: list[Any] = []
    for p in order:
        if p == "TensorrtExecutionProvider":
            # FP16 as on the robot; the engine cache saves minutes of building on every start.
            out.append((p, {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(cache_dir), **(trt_options or {})}))
        else:
            out.append(p)
    return out


def open_session(path: Path, threads: int, providers: tuple[str, ...] = (),
                 trt_options: dict[str, str] | None = None) -> Any:
    """An ONNX Runtime session for a model file; ModelLoadError if it cannot be opened."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads would take the CPU the grabber, faces and HTTP need between frames.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=opts,
                                    providers=providers_for(providers, path.parent / "trt-cache", trt_options))
    except ModelLoadError:
        raise
    except Exception as e:  # onnxruntime raises its own untyped errors for a corrupt or foreign file
        raise ModelLoadError(f"could not load {path}: {e}") from e


def metadata(session: Any) -> tuple[dict[int, str], int | None]:
    """Class names and square input size from an Ultralytics ONNX export's metadata."""
    meta = session.get_modelmeta().custom_metadata_map
    names: dict[int, str] = {}
    if "names" in meta:
        try:
            names = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
        except (ValueError, SyntaxError) as e:
            log.warning("unreadable class names in the ONNX metadata: %s", e)
    shape = session.get_inputs()[0].shape
    size = shape[2] if isinstance(shape[2], int) else None
    return names, size
