"""The dashboard's event hub: one stream that merges what the agent sees, for any number of pages.

The agent already receives the audio service's events (the voice loop) and makes its own (turns
starting, reply text as it streams, turn records); the monitor adds health, machine and scene snapshots.
Everything goes through `publish`, on the event loop, to each subscriber's bounded queue: a page that
stops reading loses its oldest events instead of growing the agent's memory. A new page first gets
the latest snapshot of each kind and the last turn records, so it is complete at once.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any

log = logging.getLogger(__name__)

#: Kinds of which only the newest matters: a new subscriber gets the last one of each at once.
SNAPSHOT_KINDS = ("health", "machine", "scene", "services")


class Hub:
    def __init__(self, queue_size: int = 512, keep_turns: int = 50) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._snapshots: dict[str, str] = {}
        self._turns: collections.deque[str] = collections.deque(maxlen=keep_turns)
        self.dropped = 0

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send one event (`kind` is the SSE event name) to every page; call on the event loop."""
        frame = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"
        if kind in SNAPSHOT_KINDS:
            self._snapshots[kind] = frame
        elif kind == "turn":
            self._turns.append(frame)
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(frame)

    def subscribe(self) -> asyncio.Queue[str | None]:
        """A queue of SSE frames, primed with the snapshots and recent turns (unsubscribe when done)."""
        q: asyncio.Queue[str | None] = asyncio.Queue(self._queue_size)
        for frame in [*self._snapshots.values(), *self._turns]:
            if not q.full():
                q.put_nowait(frame)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[str | None]) -> None:
        self._subscribers.discard(q)

    def close(self) -> None:
        """End every stream (shutdown)."""
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
            q.put_nowait(None)
