"""Running the streams of one request side by side: all of them to the end, or their events merged.

Both helpers own the tasks they start: if one stream fails, or the caller stops listening (a client
that went away closes the merged iterator), the others are cancelled and awaited before the helper
returns, so no generation outlives the request that holds its slots.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def all_of(work: Sequence[Awaitable[T]]) -> list[T]:
    """The results of `work` in order; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _End:
    """One source is exhausted."""


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def merge(sources: Sequence[AsyncIterator[T]]) -> AsyncIterator[T]:
    """Items of all `sources` as they come; each source's own order is kept."""
    queue: asyncio.Queue[T | _End | _Failed] = asyncio.Queue()

    async def pump(source: AsyncIterator[T]) -> None:
        try:
            async with contextlib.aclosing(source):  # type: ignore[type-var]
                async for item in source:
                    queue.put_nowait(item)
            queue.put_nowait(_End())
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # handed to the consumer, raised there
            queue.put_nowait(_Failed(e))

    tasks = [asyncio.ensure_future(pump(s)) for s in sources]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if isinstance(item, _End):
                remaining -= 1
            elif isinstance(item, _Failed):
                raise item.error
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
