"""Errors of the vision service and their mapping to OpenAI-style bodies, in one place.

Engine-layer failures (a missing model, an undecodable image) are specific exception types raised
below the routers; `install_error_handlers` turns each into `{"error": {"message", "type", "param",
"code"}}` with its status. The service keeps running after any of them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class VisionError(Exception):
    """Base of the errors the vision engines raise."""


class ModelMissingError(VisionError):
    """A model file does not exist; the message names the setting and `watus models setup`."""


class ModelLoadError(VisionError):
    """A model file exists but could not be loaded."""


class APIError(Exception):
    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


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


class NotReadyError(APIError):
    status = 503
    type = "server_not_ready"
    code = "model_loading"


class OverloadedError(APIError):
    status = 503
    type = "server_overloaded"
    code = "busy"


def error_body(message: str, type_: str, param: str | None = None, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        if exc.status >= 500 and exc.status != 503:
            log.error("request failed: %s", exc.message)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body")) or None
        msg = str(first.get("msg", "invalid request"))
        return JSONResponse(error_body(f"{param}: {msg}" if param else msg, "invalid_request_error", param),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", None, code),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))
