"""Runs synthesis in one worker thread and hands chunks over as each is ready.

`synthesize` is the core, run inside the worker: it walks the text pieces, yields each engine chunk to
an `emit` callback as soon as it exists (so playback or an HTTP stream starts on the first sentence),
and checks `cancelled` between pieces and chunks (a barge-in, a client that went away). `stream` bridges
that to an async iterator for HTTP responses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from audio.metrics import AudioMetrics
from audio.pcm import I16
from audio.tts import VoiceRef


@dataclass(frozen=True)
class Chunk:
    pcm: I16
    sample_rate: int
    piece: int  # index of the text piece it belongs to
    last: bool  # the empty marker chunk after the whole text


_END = object()


class TtsRunner:
    def __init__(self, metrics: AudioMetrics | None = None) -> None:
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")

    def run(self, fn: Callable[[], object]) -> Future[object]:
        return self._pool.submit(fn)

    def synthesize(self, pieces: list[str], voice: VoiceRef, speed: float, emit: Callable[[Chunk], None],
                   cancelled: Callable[[], bool]) -> None:
        """Synthesise `pieces` in order, calling `emit` per chunk; runs in the worker thread."""
        engine = voice.engine
        for i, piece in enumerate(pieces):
            started, samples = time.perf_counter(), 0
            for pcm in engine.synthesize(piece, voice.voice, speed):
                if cancelled():
                    return
                if len(pcm):
                    samples += len(pcm)
                    emit(Chunk(pcm, engine.sample_rate, i, False))
            if self._metrics is not None and samples:
                rtf = (time.perf_counter() - started) / (samples / engine.sample_rate)
                self._metrics.tts_rtf.labels(engine.name).observe(rtf)
            if cancelled():
                return
        emit(Chunk(np.zeros(0, np.int16), engine.sample_rate, len(pieces) - 1, True))

    def submit(self, pieces: list[str], voice: VoiceRef, speed: float, emit: Callable[[Chunk], None],
               cancelled: Callable[[], bool]) -> Future[None]:
        return self._pool.submit(self.synthesize, pieces, voice, speed, emit, cancelled)

    async def stream(self, pieces: list[str], voice: VoiceRef, speed: float) -> AsyncIterator[Chunk]:
        """Chunks as they are synthesised; closing the iterator early stops the synthesis."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = False

        def emit(chunk: Chunk) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)

        future = self.submit(pieces, voice, speed, emit, lambda: stop)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, _END))
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                assert isinstance(item, Chunk)
                yield item
            future.result()  # an engine error surfaces here
        finally:
            stop = True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
