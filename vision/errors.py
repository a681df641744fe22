"""Errors of the vision service; the shared API types and their HTTP mapping live in `watus.core.api_errors`.

Engine-layer failures (a missing model, an undecodable image) are specific exception types raised
below the routers; `install_error_handlers` turns each into `{"error": {"message", "type", "param",
"code"}}` with its status. The service keeps running after any of them.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from watus.core import api_errors
from watus.core.api_errors import APIError, BadRequestError, InternalEngineError, NotReadyError, error_body

__all__ = [
    "APIError",
    "BadImageError",
    "BadRequestError",
    "InternalEngineError",
    "ModelLoadError",
    "ModelMissingError",
    "NoSceneError",
    "NotReadyError",
    "OverloadedError",
    "StaleSceneError",
    "TooLargeError",
    "UnsupportedImageError",
    "VisionError",
    "error_body",
    "install_error_handlers",
]

log = logging.getLogger(__name__)


class VisionError(Exception):
    """Base of the errors the vision engines raise."""


class ModelMissingError(VisionError):
    """A model file does not exist; the message names the setting and `watus models setup`."""


class ModelLoadError(VisionError):
    """A model file exists but could not be loaded."""


class BadImageError(APIError):
    """The upload is not an image we can decode (not an image, truncated, empty, zero size)."""

    code = "invalid_image"


class UnsupportedImageError(APIError):
    status = 415
    code = "unsupported_image_type"


class TooLargeError(APIError):
    status = 413
    code = "image_too_large"


class StaleSceneError(APIError):
    status = 503
    type = "scene_unavailable"
    code = "stale_scene"


class NoSceneError(APIError):
    status = 503
    type = "scene_unavailable"
    code = "no_scene"


class OverloadedError(api_errors.OverloadedError):
    code = "busy"


def install_error_handlers(app: FastAPI) -> None:
    """The shared handlers; 503s (loading, busy, no or stale scene) are states clients poll through, not logged."""
    api_errors.install_error_handlers(app, logger=log, quiet_statuses={503})
