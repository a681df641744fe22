"""Noticing that the client of a non-streamed request went away, without polling.

A streamed reply needs nothing here: Starlette's `StreamingResponse` waits on the ASGI `receive()` for
`http.disconnect` while it sends, and cancels the body iterator. A non-streamed request has no such
listener while it generates, so `until_disconnected` runs the work next to a task that waits on the
same channel. FastAPI has read the whole body by then, so the next message the server sends is
`http.disconnect`: when the connection closes, or once the response is complete (never before it
here, as the response is only sent after the work ends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before its reply was ready; the work was cancelled."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when `receive()` reports `http.disconnect` (the request body must have been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`; if the client goes away first, cancel it and raise ClientDisconnected."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and watcher.exception() is not None:
            # Cannot watch this connection (an ASGI server without a receive channel): just wait.
            log.warning("cannot watch the connection for a disconnect", exc_info=watcher.exception())
            await asyncio.wait((task,))
        if task.done():
            return task.result()
        raise ClientDisconnected("client disconnected")
    finally:
        # Also when this coroutine is cancelled itself: neither task may outlive the request.
        watcher.cancel()
        task.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
