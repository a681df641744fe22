"""API errors of the LLM server; the shared types and their HTTP mapping live in `watus.core.api_errors`.

Every failure a client can cause is one of these types, raised anywhere below the routers and turned
into `{"error": {"message", "type", "param", "code"}}` with the right status by the handlers
installed in `install_error_handlers`. The server keeps serving after any of them.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from watus.core import api_errors
from watus.core.api_errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InternalEngineError,
    NotReadyError,
    error_body,
)

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ContextLengthError",
    "InternalEngineError",
    "ModelNotFoundAPIError",
    "NotReadyError",
    "OverloadedError",
    "error_body",
    "install_error_handlers",
]

log = logging.getLogger(__name__)


class ContextLengthError(APIError):
    code = "context_length_exceeded"


class ModelNotFoundAPIError(APIError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class OverloadedError(api_errors.OverloadedError):
    code = "queue_full"


def install_error_handlers(app: FastAPI) -> None:
    """The shared handlers; every 5xx, 503 included, is logged here."""
    api_errors.install_error_handlers(app, logger=log)
