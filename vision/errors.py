"""Errors of the vision service; the shared API types and their HTTP mapping live in `watus.core.api_errors`.

Engine-layer failures (a missing model, an undecodable image) are specific exception types raised
below the routers; `install_error_handlers` turns each into `{"error": {"message", "type", "param",
"code"}}` with its status. The service keeps running after any of them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from vision.protocol import ErrorResponse
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
    "document_errors",
    "error_body",
    "error_responses",
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


_ERROR_DESCRIPTIONS = {
    400: "Invalid request; `param` names the parameter.",
    413: "The upload is over WATUS_VISION_MAX_UPLOAD_BYTES or the image over WATUS_VISION_MAX_IMAGE_PIXELS.",
    415: "Not a JPEG, PNG, BMP or WebP image.",
    503: "Not ready yet, no scene yet, a scene older than `max_age_ms`, or too many uploads waiting "
         "(with `Retry-After`).",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: the error body for each status it can answer with."""
    return {status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]} for status in statuses}


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI say what the handlers do: a bad parameter is the 400 each route declares (with
    `error_responses`), not FastAPI's default 422 with its own validation body, which is never sent."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
