"""trt_server.disconnect: a non-streamed request's work is cancelled when its client goes away.

Pure asyncio with stand-ins for the ASGI `receive()` channel; the end-to-end check against a real server
and client is in test_llm_concurrency.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from trt_server.disconnect import ClientDisconnected, until_disconnected


class Channel:
    """An ASGI receive channel that reports `http.disconnect` once `close()` is called."""

    def __init__(self) -> None:
        self._closed = asyncio.Event()
        self.calls = 0

    def close(self) -> None:
        self._closed.set()

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        await self._closed.wait()
        return {"type": "http.disconnect"}


class Work:
    """A long piece of work that records whether it finished or was cancelled."""

    def __init__(self, seconds: float, result: str = "done") -> None:
        self.seconds, self.result = seconds, result
        self.cancelled = False

    async def __call__(self) -> str:
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.result


async def test_work_that_ends_first_is_returned() -> None:
    channel, work = Channel(), Work(0.01, "body")
    assert await until_disconnected(channel, work()) == "body"
    assert channel.calls == 1 and not work.cancelled


async def test_a_disconnect_cancels_the_work_at_once() -> None:
    channel, work = Channel(), Work(30)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, channel.close)
    started = loop.time()
    with pytest.raises(ClientDisconnected):
        await until_disconnected(channel, work())
    assert work.cancelled and loop.time() - started < 1


async def test_errors_of_the_work_propagate() -> None:
    async def failing() -> str:
        raise ValueError("engine broke")

    with pytest.raises(ValueError, match="engine broke"):
        await until_disconnected(Channel(), failing())


async def test_cancelling_the_request_cancels_the_work() -> None:
    work = Work(30)
    waiter = asyncio.ensure_future(until_disconnected(Channel(), work()))
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert work.cancelled


async def test_a_channel_that_cannot_be_read_leaves_the_work_running() -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("Receive channel has not been made available")

    work = Work(0.05, "body")
    assert await until_disconnected(broken, work()) == "body"
    assert not work.cancelled


async def test_other_messages_are_not_a_disconnect() -> None:
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    closed = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await closed.wait()
        return {"type": "http.disconnect"}

    assert await until_disconnected(receive, Work(0.05, "body")()) == "body"
