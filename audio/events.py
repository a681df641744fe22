"""The event bus behind `GET /v1/events`: fan-out of events to every SSE client.

Events are produced on the event loop (HTTP handlers, the speaker) and in threads (the listener, the
playback thread); `publish_threadsafe` hops onto the loop. Each client has its own bounded queue: a
client that stops reading loses its oldest events (counted) instead of growing memory or slowing the
audio path, which must never wait for a network peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from watus.core.wire.audio import AudioEvent as Event

log = logging.getLogger(__name__)


class EventBus:
    def __init__(self, loop: asyncio.AbstractEventLoop, queue_size: int = 512,
                 on_drop: Callable[[int], None] | None = None) -> None:
        self._loop = loop
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._on_drop = on_drop
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, ev: Event) -> None:
        """Deliver `ev` to every subscriber; call on the event loop."""
        log.debug("event %s", ev.type)
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
                if self._on_drop is not None:
                    self._on_drop(1)
            q.put_nowait(ev)

    def publish_threadsafe(self, ev: Event) -> None:
        """`publish` from any thread (the loop may already be closed at shutdown: then drop it)."""
        if self.closed:
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.publish, ev)

    def subscribe(self) -> Subscription:
        """A new subscription, receiving every event published from now on (close it when done)."""
        sub = Subscription(self, asyncio.Queue(self._queue_size))
        self._subscribers.add(sub.queue)
        return sub

    def close(self) -> None:
        """End every subscription (shutdown)."""
        self.closed = True
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
            q.put_nowait(None)


class Subscription:
    """One client's view of the bus: `await next(timeout)` until it returns None after `close`."""

    def __init__(self, bus: EventBus, queue: asyncio.Queue[Event | None]) -> None:
        self.bus = bus
        self.queue = queue
        self.ended = False

    async def next(self, timeout: float) -> Event | None:
        """The next event, or None after `timeout` seconds without one (then check `ended`)."""
        try:
            ev = await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if ev is None:
            self.ended = True
        return ev

    def close(self) -> None:
        self.bus._subscribers.discard(self.queue)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
