"""Checking and decoding uploaded images before they reach a model.

An upload is judged from its header first: format by magic bytes, width and height from the JPEG
SOF / PNG IHDR / BMP / WebP header, so a decompression bomb (a small file that decodes to gigabytes)
is refused before any pixel is decoded. libjpeg "decodes" a truncated JPEG by filling the rest grey,
so a JPEG must end its last scan with an EOI marker; a truncated PNG must have its IEND chunk.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.errors import BadImageError, TooLargeError, UnsupportedImageError

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise BadImageError("Corrupt JPEG: bad marker sequence.", param="file")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF_MARKERS:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker == 0xDA or length < 2:
            break
        i += 2 + length
    raise BadImageError("Corrupt or truncated JPEG: no frame header.", param="file")


def image_info(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header. BadImageError / UnsupportedImageError if not an image."""
    if not data:
        raise BadImageError("Empty upload: send the image bytes.", param="file", code="empty_image")
    if data[:3] == b"\xff\xd8\xff":
        width, height = _jpeg_size(data)
        sos, eoi = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
        if eoi < 0 or eoi < sos:
            raise BadImageError("Truncated JPEG: the image data ends before its end marker.", param="file",
                                code="truncated_image")
        fmt = "jpeg"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadImageError("Corrupt PNG: no IHDR header.", param="file")
        width, height = struct.unpack(">II", data[16:24])
        if b"IEND" not in data[-16:]:
            raise BadImageError("Truncated PNG: no IEND chunk.", param="file", code="truncated_image")
        fmt = "png"
    elif data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        width, height, fmt = abs(width), abs(height), "bmp"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        (width, height), fmt = _webp_size(data), "webp"
    else:
        raise UnsupportedImageError("Not an image this service reads: send JPEG, PNG, BMP or WebP bytes.",
                                    param="file")
    if width <= 0 or height <= 0:
        raise BadImageError(f"Image has zero size ({width}×{height}).", param="file", code="empty_image")
    return fmt, width, height


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, h
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    raise BadImageError("Corrupt WebP header.", param="file")


def decode_image(data: bytes, max_pixels: int) -> NDArray[np.uint8]:
    """Upload bytes → BGR frame, after the header checks. Raises an APIError subclass on bad input."""
    _, width, height = image_info(data)
    if width * height > max_pixels:
        raise TooLargeError(f"Image of {width}×{height} px is over the limit of {max_pixels:,} px "
                            "(WATUS_VISION_MAX_IMAGE_PIXELS).", param="file")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise BadImageError("The image could not be decoded (corrupt data).", param="file")
    return np.ascontiguousarray(image)
