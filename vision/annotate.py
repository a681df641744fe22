"""Drawing a scene onto its frame for `GET /v1/frame.jpg?annotated=1` (people check what the robot sees)."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.protocol import Box, Scene

_PERSON = (60, 200, 60)
_OBJECT = (230, 160, 30)
_FACE = (40, 200, 255)


def _px(box: Box, w: int, h: int) -> tuple[int, int, int, int]:
    return round(box.x1 * w), round(box.y1 * h), round(box.x2 * w), round(box.y2 * h)


def _label(img: NDArray[np.uint8], text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    scale = max(0.4, min(img.shape[:2]) / 1000)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = max(y, th + base + 2)
    cv2.rectangle(img, (x, y - th - base - 2), (x + tw + 4, y), colour, -1)
    cv2.putText(img, text, (x + 2, y - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def annotate(image: NDArray[np.uint8], scene: Scene) -> NDArray[np.uint8]:
    """A copy of the frame with object boxes, track ids, faces and their attributes."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 400))
    for obj in scene.objects:
        if obj.label == "person":
            continue
        x1, y1, x2, y2 = _px(obj.box, w, h)
        cv2.rectangle(out, (x1, y1), (x2, y2), _OBJECT, thick)
        tid = f" #{obj.track_id}" if obj.track_id is not None else ""
        _label(out, f"{obj.label}{tid} {obj.confidence:.2f}", x1, y1, _OBJECT)
    for p in scene.people:
        x1, y1, x2, y2 = _px(p.box, w, h)
        cv2.rectangle(out, (x1, y1), (x2, y2), _PERSON, thick)
        parts = [f"person{f' #{p.track_id}' if p.track_id is not None else ''} {p.confidence:.2f}"]
        if p.age is not None:
            parts.append(f"{p.age.years:.0f}y")
        if p.gender is not None:
            parts.append(p.gender.label)
        if p.emotion is not None:
            parts.append(p.emotion.label)
        _label(out, " ".join(parts), x1, y1, _PERSON)
        if p.face is not None:
            fx1, fy1, fx2, fy2 = _px(p.face, w, h)
            cv2.rectangle(out, (fx1, fy1), (fx2, fy2), _FACE, thick)
    return out


def encode_jpeg(image: NDArray[np.uint8], quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
