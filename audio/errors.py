"""API errors of the audio service; the shared types and their HTTP mapping live in `watus.core.api_errors`.

Engines and decoders raise their own specific exceptions (`AudioDecodeError`, `UnknownVoiceError`, ...);
the routers turn them into one of the `APIError` types below, and the handlers installed by
`install_error_handlers` write `{"error": {"message", "type", "param", "code"}}` with the right status.
Any of them leaves the service serving. Oversized bodies are refused before they are parsed by the shared
body limit (`watus.core.bodylimit`), with `PayloadTooLargeError`'s code on the upload path.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from watus.core import api_errors
from watus.core.api_errors import (
    APIError,
    BadRequestError,
    InternalEngineError,
    NotReadyError,
    RequestTooLargeError,
    error_body,
)

__all__ = [
    "APIError",
    "BadRequestError",
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


class PayloadTooLargeError(RequestTooLargeError):
    code = "file_too_large"


class UnknownVoiceError(APIError):
    code = "voice_not_found"


class QueueFullError(APIError):
    status = 429
    type = "rate_limit_error"
    code = "speak_queue_full"


def install_error_handlers(app: FastAPI) -> None:
    """The shared handlers, with a plain HTTP 413 coded like `PayloadTooLargeError`."""
    api_errors.install_error_handlers(app, logger=log, http_codes={413: "file_too_large"})

