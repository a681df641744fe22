"""The size limit on every request body of a Watus service: 413 with the OpenAI-style error body.

One ASGI middleware for all four processes, so that no endpoint can be made to buffer an unbounded body
(a JSON chat request, a form, an image, an audio upload). Each path may have its own limit (the uploads:
vision's image, audio's file) and every other path has the service's `max_body_bytes`.

A declared `Content-Length` over the limit is answered at once, before a byte of the body is read. A
body without one (chunked) is counted as the app reads it and stops being read at the limit: the
reader raises `BodyTooLarge`, an `HTTPException`, which FastAPI's body parsing lets through and the
handlers of `watus.core.api_errors` answer (a plain Starlette app's own handler would answer it in plain
text); should nothing inside have answered it (a bare ASGI app), this middleware does, if no response
has started. Either way the connection is closed after
the 413, so the rest of the body is never read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watus.core.api_errors import BodyTooLarge, RequestTooLargeError, send_error


@dataclass(frozen=True)
class Limit:
    """The largest body of a path, the setting that says so (named in the error), and the error's code."""

    max_bytes: int
    setting: str
    code: str = "request_too_large"
    param: str | None = None

    def error(self, declared: int | None = None) -> RequestTooLargeError:
        size = f"of {declared:,} bytes " if declared is not None else ""
        return RequestTooLargeError(f"Request body {size}is over the limit of {self.max_bytes:,} bytes "
                                    f"({self.setting}).", param=self.param, code=self.code)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimit:
    """ASGI middleware: `paths` maps an exact path to its own `Limit`; every other path has `default`."""

    def __init__(self, app: ASGIApp, default: Limit, paths: Mapping[str, Limit] | None = None) -> None:
        self.app = app
        self.default = default
        self.paths = dict(paths or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.paths.get(scope.get("path", ""), self.default)
        declared = _content_length(scope)
        if declared is not None and declared > limit.max_bytes:
            await send_error(limit.error(declared), scope, receive, send, {"Connection": "close"})
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit.max_bytes:
                    raise BodyTooLarge(limit.error())
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as e:
            if started:
                raise
            await send_error(e.error, scope, receive, send, {"Connection": "close"})
