"""OpenAI-style API errors shared by the HTTP services (LLM, audio, vision), mapped to HTTP in one place.

Every failure a client can cause is an `APIError` subclass, raised anywhere below the routers and
written as `{"error": {"message", "type", "param", "code"}}` with its status by the handlers that
`install_error_handlers` adds; FastAPI's validation errors, Starlette's HTTP errors (404, 405, ...)
and malformed JSON get the same body shape; so does an exception nothing expected (a bug): a 500 of
type `server_error`, logged once with its traceback. A service keeps serving after any of them.

Each service's `errors.py` re-exports these names, adds its own subclasses, and calls
`install_error_handlers` with what differs between services (its logger, extra codes, quiet statuses).
Needs FastAPI, so only the service processes import it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Collection, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

#: `code` of the body for Starlette's own HTTP errors; a service may add or override entries.
HTTP_CODES: Mapping[int, str] = {404: "not_found", 405: "method_not_allowed"}

#: Parts of a validation error's `loc` that name where a value came from, not the field the client named.
_LOCATION_SOURCES = ("body", "form", "query")


class APIError(Exception):
    """A failure to report to the client: class attributes give the status, `type` and `code`."""

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


class NotReadyError(APIError):
    status = 503
    type = "server_not_ready"
    code = "model_loading"


class OverloadedError(APIError):
    """Too much work waiting; each service sets the `code` that names its queue."""

    status = 503
    type = "server_overloaded"


class InternalEngineError(APIError):
    status = 500
    type = "server_error"
    code = "engine_error"


class AuthenticationError(APIError):
    """No API key, or the wrong one (`watus.core.security`)."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class RequestTooLargeError(APIError):
    """A request body over its limit (`watus.core.bodylimit`); a service may give a path its own code."""

    status = 413
    code = "request_too_large"


class BodyTooLarge(StarletteHTTPException):
    """Raised while a body is read past its limit, carrying the error to answer with.

    An `HTTPException` because FastAPI lets those out of its body parsing unchanged (any other exception
    there becomes a 400 "error parsing the body"); `install_error_handlers` answers it with `error`'s body.
    """

    def __init__(self, error: APIError) -> None:
        super().__init__(error.status, error.message, headers={"Connection": "close", **error.headers})
        self.error = error


async def send_error(error: APIError, scope: Scope, receive: Receive, send: Send,
                     headers: dict[str, str] | None = None) -> None:
    """Answer an ASGI request with `error`'s body, for middleware that answers before the app does."""
    response = JSONResponse(error.body(), status_code=error.status, headers={**error.headers, **(headers or {})})
    await response(scope, receive, send)


def error_body(message: str, type_: str, param: str | None = None, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first problem as `"field.path: what is wrong"`, and the field path as `param`."""
    errors = exc.errors()
    if not errors:
        return "Invalid request body", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"Request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}", None
    # Discriminated unions add the tag to the location; keep the field path readable.
    loc = [str(p) for p in first.get("loc", ()) if p not in _LOCATION_SOURCES]
    param = ".".join(loc) or None
    msg = "field required" if first.get("type") == "missing" else str(first.get("msg", "invalid value"))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{param}: {msg}{more}" if param else f"{msg}{more}"), param


def install_error_handlers(app: FastAPI, *, logger: logging.Logger = log, http_codes: Mapping[int, str] | None = None,
                           quiet_statuses: Collection[int] = ()) -> None:
    """Answer every error with an OpenAI-style body.

    `logger` gets one ERROR line per `APIError` with a 5xx status, except the `quiet_statuses` (states
    a client is expected to poll through, such as 503 while loading); `http_codes` adds to or overrides
    `HTTP_CODES` for Starlette's HTTP errors.
    """
    codes = {**HTTP_CODES, **(http_codes or {})}

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        if exc.status >= 500 and exc.status not in quiet_statuses:
            logger.error("request failed: %s", exc.message)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, "invalid_request_error", param, None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", None, codes.get(exc.status_code)),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(json.JSONDecodeError)
    async def _json(_: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return JSONResponse(error_body(f"Request body is not valid JSON: {exc}", "invalid_request_error"),
                            status_code=400)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(exc.error.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware calls this, sends the answer (unless a stream already started)
        # and re-raises for the server to log; the mark keeps uvicorn from printing the traceback twice.
        logger.error("unhandled error in %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc,
                     exc_info=exc)
        with contextlib.suppress(AttributeError):  # an exception type without a __dict__ is logged twice
            exc.__dict__[_LOGGED] = True
        return JSONResponse(error_body(f"Internal server error ({type(exc).__name__}); the service's log has the "
                                       "details.", "server_error", None, "internal_error"), status_code=500)

    _quiet_uvicorn_duplicate()


#: Attribute of an exception that the catch-all has logged.
_LOGGED = "_watus_logged"


class _AlreadyLogged(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" for an exception the catch-all logged already."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, _LOGGED, False)


def _quiet_uvicorn_duplicate() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _AlreadyLogged) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_AlreadyLogged())
