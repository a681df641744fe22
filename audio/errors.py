"""API errors of the audio service and their mapping to OpenAI-style error bodies, in one place.

Engines and decoders raise their own specific exceptions (`AudioDecodeError`, `UnknownVoiceError`, ...);
the routers turn them into one of the `APIError` types below, and the handlers installed by
`install_error_handlers` write `{"error": {"message", "type", "param", "code"}}` with the right status.
Any of them leaves the service serving. `BodyLimit` rejects oversized uploads before they are parsed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


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


class BadRequestError(APIError):
    pass


class InvalidAudioError(APIError):
    """An upload that is empty, truncated, not audio, or at an unusable sample rate."""

    code = "invalid_audio"


class PayloadTooLargeError(APIError):
    status = 413
    code = "file_too_large"


class UnknownVoiceError(APIError):
    code = "voice_not_found"


class QueueFullError(APIError):
    status = 429
    type = "rate_limit_error"
    code = "speak_queue_full"


class NotReadyError(APIError):
    status = 503
    type = "server_not_ready"
    code = "model_loading"


class InternalEngineError(APIError):
    status = 500
    type = "server_error"
    code = "engine_error"


def error_body(message: str, type_: str, param: str | None = None, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request body", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"Request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}", None
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "form", "query")]
    param = ".".join(loc) or None
    msg = "field required" if first.get("type") == "missing" else str(first.get("msg", "invalid value"))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{param}: {msg}{more}" if param else f"{msg}{more}"), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        if exc.status >= 500:
            log.error("request failed: %s", exc.message)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, "invalid_request_error", param, None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "file_too_large"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", None, code),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(json.JSONDecodeError)
    async def _json(_: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return JSONResponse(error_body(f"Request body is not valid JSON: {exc}", "invalid_request_error"),
                            status_code=400)


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes on the given paths, before parsing.

    A declared Content-Length over the limit is answered at once, without reading the body; a chunked
    body is counted as it arrives and stops being read past the limit (FastAPI re-raises an
    `HTTPException` from the body reader, which the handler above turns into an OpenAI-style 413).
    """

    def __init__(self, app: ASGIApp, limits: dict[str, int]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.get(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        message = f"Request body larger than the limit of {limit:,} bytes (WATUS_AUDIO_MAX_UPLOAD_BYTES)."
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = JSONResponse(error_body(message, "invalid_request_error", "file", "file_too_large"),
                                    status_code=413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(413, message)
            return msg

        await self.app(scope, counted, send)
