"""API errors of the audio service; the shared types and their HTTP mapping live in `watus.core.api_errors`.

Engines and decoders raise their own specific exceptions (`AudioDecodeError`, `UnknownVoiceError`, ...);
the routers turn them into one of the `APIError` types below, and the handlers installed by
`install_error_handlers` write `{"error": {"message", "type", "param", "code"}}` with the right status.
Any of them leaves the service serving. `BodyLimit` rejects oversized uploads before they are parsed.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watus.core import api_errors
from watus.core.api_errors import APIError, BadRequestError, InternalEngineError, NotReadyError, error_body

__all__ = [
    "APIError",
    "BadRequestError",
    "BodyLimit",
    "InternalEngineError",
    "InvalidAudioError",
    "NotReadyError",
    "PayloadTooLargeError",
    "QueueFullError",
    "UnknownVoiceError",
    "error_body",
    "install_error_handlers",
]

log = logging.getLogger(__name__)


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


def install_error_handlers(app: FastAPI) -> None:
    """The shared handlers, with a 413 from `BodyLimit` coded like `PayloadTooLargeError`."""
    api_errors.install_error_handlers(app, logger=log, http_codes={413: "file_too_large"})


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes on the given paths, before parsing.

    A declared Content-Length over the limit is answered at once, without reading the body; a chunked
    body is counted as it arrives and stops being read past the limit (FastAPI re-raises an
    `HTTPException` from the body reader, which `install_error_handlers` turns into an OpenAI-style 413).
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
