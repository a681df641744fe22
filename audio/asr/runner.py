"""Runs the ASR engine in its own single worker thread and times every job.

The engine is not thread-safe and CTranslate2 already uses all its threads per call, so one job runs
at a time; the listener (live utterances) and HTTP uploads queue on the same worker. `submit` returns a
`concurrent.futures.Future` usable from the listener thread; `transcribe` awaits it on the event loop.
The segment generator is drained inside the worker.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from audio.asr.base import AsrEngine, AsrSegment, TranscribeOptions
from audio.metrics import AudioMetrics
from audio.pcm import ASR_RATE, F32


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    language_probability: float
    duration_s: float
    segments: list[AsrSegment]
    submitted_ns: int
    started_ns: int
    finished_ns: int
    window_s: float = 30.0
    #: Seconds at the utterance's start transcribed before it ended (`audio.incremental`); the text covers all.
    settled_s: float = 0.0

    @property
    def queue_ms(self) -> float:
        return (self.started_ns - self.submitted_ns) / 1e6

    @property
    def asr_ms(self) -> float:
        return (self.finished_ns - self.started_ns) / 1e6

    @property
    def rtf(self) -> float:
        return self.asr_ms / 1000 / self.duration_s if self.duration_s > 0 else 0.0


class AsrRunner:
    def __init__(self, engine: AsrEngine, metrics: AudioMetrics | None = None) -> None:
        self.engine = engine
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")

    def load(self) -> Future[None]:
        return self._pool.submit(self.engine.load)

    def submit(self, audio: F32, options: TranscribeOptions, source: str = "http") -> Future[Transcript]:
        submitted = time.monotonic_ns()
        return self._pool.submit(self._run, audio, options, source, submitted)

    async def transcribe(self, audio: F32, options: TranscribeOptions, source: str = "http") -> Transcript:
        return await asyncio.wrap_future(self.submit(audio, options, source))

    def _run(self, audio: F32, options: TranscribeOptions, source: str, submitted: int) -> Transcript:
        started = time.monotonic_ns()
        info, segments = self.engine.transcribe(audio, options)
        segs = list(segments)
        finished = time.monotonic_ns()
        text = "".join(s.text for s in segs).strip()
        t = Transcript(text=" ".join(text.split()), language=info.language,
                       language_probability=info.language_probability, duration_s=len(audio) / ASR_RATE,
                       segments=segs, submitted_ns=submitted, started_ns=started, finished_ns=finished,
                       window_s=info.window_s)
        if self._metrics is not None and source != "warmup":
            self._metrics.asr_latency.labels(source).observe(t.asr_ms / 1000)
            if t.duration_s > 0:
                self._metrics.asr_rtf.labels(source).observe(t.rtf)
        return t

    def warm_up(self, options: TranscribeOptions) -> Future[Transcript]:
        """One transcription of a second of low noise: first-call allocations happen before /health is ok."""
        noise = (np.random.default_rng(0).standard_normal(ASR_RATE) * 0.003).astype(np.float32)
        return self.submit(noise, options, source="warmup")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
