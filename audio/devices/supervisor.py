"""Keeps the microphone open: reopens it with exponential backoff when it fails or goes silent.

A microphone that is unplugged, busy or missing is a state shown in `/health`, never a crash: each
failed attempt waits `retry_initial_s`, doubling up to `retry_max_s`. A source that stops delivering
blocks for `stall_timeout_s` (some drivers hang rather than fail) is treated as failed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from audio.devices import SourceFactory
from audio.devices.base import AudioSource, DeviceError
from audio.pcm import F32

log = logging.getLogger(__name__)

#: (block, source rate, capture time ns)
Feed = Callable[[F32, int, int], None]


@dataclass
class MicState:
    state: str = "starting"  # starting | running | retrying | finished | stopped
    device: str | None = None
    sample_rate: int | None = None
    error: str | None = None
    attempts: int = 0  # consecutive failed attempts
    next_retry_s: float | None = None
    restarts: int = 0  # failed attempts since start

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class MicSupervisor:
    def __init__(self, factory: SourceFactory, feed: Feed, on_input_end: Callable[[], None],
                 retry_initial_s: float, retry_max_s: float, stall_timeout_s: float,
                 on_failure: Callable[[], None] | None = None,
                 on_start: Callable[[AudioSource], None] | None = None) -> None:
        self._factory = factory
        self._feed = feed
        self._on_input_end = on_input_end
        self._initial = retry_initial_s
        self._max = retry_max_s
        self._stall = stall_timeout_s
        self._on_failure = on_failure
        self._on_start = on_start
        self.state = MicState()
        self._stopping = asyncio.Event()
        self._last_block = time.monotonic()

    def delay(self, attempt: int) -> float:
        return min(self._max, self._initial * 2 ** max(0, attempt - 1))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            source: AudioSource | None = None
            try:
                source = self._factory()
                error = await self._run_once(loop, source)
            except Exception as e:  # any failure to open is a device fault to retry, not a crash
                error = e
            finally:
                if source is not None:
                    await asyncio.to_thread(source.stop)
            if self._stopping.is_set():
                break
            if error is None:
                self.state.state, self.state.next_retry_s = "finished", None
                log.info("microphone input ended")
                self._on_input_end()
                return
            self._on_input_end()  # an utterance cut by the failure is still transcribed
            s = self.state
            s.attempts += 1
            s.restarts += 1
            wait = self.delay(s.attempts)
            s.state, s.error, s.next_retry_s = "retrying", str(error), wait
            if self._on_failure is not None:
                self._on_failure()
            log.warning("microphone failed (%s); retry %d in %.1f s", error, s.attempts, wait)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)
        self.state.state = "stopped"

    async def _run_once(self, loop: asyncio.AbstractEventLoop, source: AudioSource) -> BaseException | None:
        ended = asyncio.Event()
        result: list[BaseException | None] = []

        def on_block(block: F32, t_ns: int) -> None:
            self._last_block = time.monotonic()
            self._feed(block, source.sample_rate, t_ns)

        def on_end(exc: BaseException | None) -> None:
            result.append(exc)
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                loop.call_soon_threadsafe(ended.set)

        self.state.state = "starting"
        if self._on_start is not None:
            self._on_start(source)
        await asyncio.to_thread(source.start, on_block, on_end)
        self._last_block = time.monotonic()
        s = self.state
        s.state, s.device, s.sample_rate, s.error, s.attempts, s.next_retry_s = (
            "running", source.name, source.sample_rate, None, 0, None)
        log.info("microphone %s running at %d Hz", source.name, source.sample_rate)
        while not ended.is_set() and not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ended.wait(), min(1.0, self._stall / 2))
            if source.realtime and not ended.is_set() and time.monotonic() - self._last_block > self._stall:
                return DeviceError(f"no audio from {source.name} for {self._stall:.1f} s")
        return result[0] if result else None

    def stop(self) -> None:
        self._stopping.set()
