"""Stopping a service without cutting off the requests it is serving: the drain between SIGTERM and exit.

systemd stops a unit with SIGTERM and waits `TimeoutStopSec` before it kills it. A service that keeps a
`Drain` (the LLM server: its streams are seconds long and a cut one is a sentence the robot never says)
then stops taking work — every new request, keep-alive ones included, gets 503 with `Retry-After` and
`Connection: close` — and lets the requests in flight finish, for at most `timeout_s`. What is still
running then is told to end (`expired`): the LLM server checks it at each generated token and ends the
stream with an OpenAI-style SSE error event and `data: [DONE]`, a whole reply with a 503. After a short
grace the server shuts down as uvicorn does and the process exits 0 (`watus.core.serve`).

The count of requests in flight is kept by `DrainMiddleware`, a plain ASGI middleware (no per-chunk
overhead on a stream): a request is in flight until its response, streamed or not, has been sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from watus.core.api_errors import APIError, error_body

log = logging.getLogger(__name__)

#: After `expired`, how long the requests still running get to send their error event and end.
EXPIRED_GRACE_S = 3.0


class ShuttingDownError(APIError):
    """The reply was cut off because the server is stopping (its drain time ran out)."""

    status = 503
    type = "server_shutting_down"
    code = "shutting_down"


class Drain:
    """A service's stop: `draining` refuses new work, `expired` ends the work still running."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self.expired = False
        self.active = 0
        self._deadline = 0.0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if self.active <= 0:
            self._idle.set()

    def remaining_s(self) -> float:
        return max(0.0, self._deadline - time.monotonic()) if self.draining else self.timeout_s

    def cut_off(self) -> ShuttingDownError:
        """The error a request still running when the drain ran out ends with."""
        return ShuttingDownError(f"The server is stopping: the reply was cut off after {self.timeout_s:g} s of "
                                 "draining. Retry shortly.", headers={"Retry-After": "5"})

    async def run(self) -> bool:
        """Refuse new work, wait for the work in flight; True if all of it finished within `timeout_s`."""
        self.draining = True
        self._deadline = time.monotonic() + self.timeout_s
        if self.active:
            log.info("stopping: %d request(s) in flight may finish within %g s; new ones get 503",
                     self.active, self.timeout_s)
        if await self._wait_idle(self.timeout_s):
            return True
        log.warning("stopping: %d request(s) still running after %g s; ending them with an error",
                    self.active, self.timeout_s)
        self.expired = True
        if not await self._wait_idle(EXPIRED_GRACE_S):
            log.warning("stopping: %d request(s) did not end after the cut-off; the server stops anyway",
                        self.active)
        return False

    async def _wait_idle(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False


class DrainMiddleware:
    """Counts the requests in flight for `drain`, and answers 503 to new ones once it drains."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await self._refuse(scope, send)
            return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = "The server is stopping and takes no new requests; retry shortly."
        # /health answers in its own shape (as while loading); the API in the OpenAI error shape.
        body = {"status": "stopping", "error": message} if scope.get("path") == "/health" else \
            error_body(message, ShuttingDownError.type, None, ShuttingDownError.code)
        data = json.dumps(body).encode()
        retry = str(max(1, math.ceil(self.drain.remaining_s())) + 1)
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
            (b"retry-after", retry.encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": data})


def install_drain(app: FastAPI, timeout_s: float) -> Drain:
    """Give `app` a drain on SIGTERM (`watus.core.serve` finds it in `app.state.drain`)."""
    drain = Drain(timeout_s)
    app.state.drain = drain
    app.add_middleware(DrainMiddleware, drain=drain)
    return drain


def drain_of(app: FastAPI) -> Drain | None:
    """The drain `install_drain` gave `app`, if any."""
    drain = getattr(app.state, "drain", None)
    return drain if isinstance(drain, Drain) else None
