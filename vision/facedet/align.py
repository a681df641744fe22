"""Face crops for the classifiers, rotated so the eyes are level when the landmarks are known.

Age, gender and emotion were trained on upright faces; a head tilted 30° reads as another face. The
crop is a square around the face box (its side padded by `pad` on each side), rotated about the box
centre by the angle of the eye line, and resampled to `size` px in one affine warp. Area outside the
frame is filled by replicating the border (as when a face touches the edge of the frame).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import NDArray

#: Tilts below this are left alone (landmark noise, and one resampling less).
MIN_ROLL_DEG = 3.0


def eye_roll_deg(landmarks: NDArray[np.float32] | None) -> float:
    """The angle of the line from the image-left eye to the other (degrees, positive: clockwise on screen)."""
    if landmarks is None:
        return 0.0
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    if rx - lx <= 0:  # eyes crossed over: a profile or a bad detection, nothing to level
        return 0.0
    return math.degrees(math.atan2(float(ry - ly), float(rx - lx)))


def crop_transform(box: NDArray[np.float32], pad: float, size: int, roll_deg: float) -> NDArray[np.float64]:
    """The 2×3 affine map from frame pixels to the `size`² crop (rotated by -roll about the box centre)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * pad)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    m = cv2.getRotationMatrix2D((cx, cy), roll_deg, size / side)  # counter-clockwise by roll: levels the eyes
    m[0, 2] += size / 2 - cx
    m[1, 2] += size / 2 - cy
    return np.asarray(m, np.float64)


def face_crop(image: NDArray[np.uint8], box: NDArray[np.float32], pad: float, size: int,
              roll_deg: float = 0.0) -> NDArray[np.uint8]:
    """A `size`² BGR crop of the face, eyes levelled; downscaled with area averaging, as the chips were made."""
    if abs(roll_deg) < MIN_ROLL_DEG:
        roll_deg = 0.0
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * pad)
    # Shrink the neighbourhood first with INTER_AREA (a warp samples, it does not average), then warp.
    reach = side * (abs(math.cos(math.radians(roll_deg))) + abs(math.sin(math.radians(roll_deg)))) / 2 + 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = image.shape[:2]
    ox, oy = max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach))
    ex, ey = min(w, math.ceil(cx + reach)), min(h, math.ceil(cy + reach))
    region = image[oy:ey, ox:ex]
    k = min(1.0, size / side)
    if k < 1.0 and region.size:
        region = np.asarray(cv2.resize(region, (max(1, round(region.shape[1] * k)), max(1, round(region.shape[0] * k))),
                                       interpolation=cv2.INTER_AREA), np.uint8)
        kx, ky = region.shape[1] / (ex - ox), region.shape[0] / (ey - oy)
    else:
        kx = ky = 1.0
    local = np.array([(x1 - ox) * kx, (y1 - oy) * ky, (x2 - ox) * kx, (y2 - oy) * ky], np.float32)
    m = crop_transform(local, pad, size, roll_deg)
    if not region.size:
        return np.zeros((size, size, 3), np.uint8)
    return np.asarray(cv2.warpAffine(region, m, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE), np.uint8)
