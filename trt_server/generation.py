"""The generation core shared by both endpoints: admission, the engine stream, text, stops, timings.

`Admission` bounds the work: `max_concurrent` requests generate, at most `queue_size` wait (each at most
`queue_timeout_s`), the rest get 503 with `Retry-After` before any byte is sent. `generate` turns an
engine's deltas into text chunks and records time to first token, prefill and decode speed and queue
wait, as Prometheus histograms and one log line per request. `Run` is one admitted generation, which
gives its slot back exactly once however it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from trt_server.engines.base import Engine, EngineError, SamplingParams
from trt_server.errors import InternalEngineError, OverloadedError
from trt_server.textstream import IncrementalDetokenizer, StopMatcher
from watus.core import metrics as m

log = logging.getLogger(__name__)


class LLMMetrics:
    """The server's Prometheus series, on the app's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = m.latency_histogram("watus_llm_ttft_seconds", "Time to first token (from arrival).",
                                        registry, ("endpoint",))
        self.queue_wait = m.latency_histogram("watus_llm_queue_wait_seconds", "Wait for a free slot.", registry)
        self.request = m.latency_histogram("watus_llm_request_seconds", "Whole request.", registry,
                                           ("endpoint",))
        self.prefill_tps = m.rate_histogram("watus_llm_prefill_tokens_per_second",
                                            "Prompt tokens / prefill time.", registry)
        self.decode_tps = m.rate_histogram("watus_llm_decode_tokens_per_second",
                                           "Generated tokens after the first / their time.", registry)
        self.prompt_tokens = m.counter("watus_llm_prompt_tokens", "Prompt tokens processed.", registry)
        self.completion_tokens = m.counter("watus_llm_completion_tokens", "Tokens generated.", registry)
        self.requests = m.counter("watus_llm_requests", "Finished requests.", registry,
                                  ("endpoint", "status"))
        self.rejected = m.counter("watus_llm_rejected", "Requests refused because the queue was full.",
                                  registry)
        self.in_flight = m.gauge("watus_llm_requests_running", "Requests generating now.", registry)
        self.queued = m.gauge("watus_llm_requests_waiting", "Requests waiting for a slot.", registry)


class Admission:
    """A bounded waiting room in front of the engine's slots."""

    def __init__(self, slots: int, queue_size: int, timeout_s: float, metrics: LLMMetrics) -> None:
        self._sem = asyncio.Semaphore(slots)
        self._queue_size = queue_size
        self._timeout = timeout_s
        self._waiting = 0
        self._metrics = metrics

    @property
    def waiting(self) -> int:
        return self._waiting

    def _overloaded(self, why: str) -> OverloadedError:
        self._metrics.rejected.inc()
        retry = max(1, int(self._timeout / 4))
        return OverloadedError(f"The server is busy ({why}); retry later.", headers={"Retry-After": str(retry)})

    async def acquire(self) -> float:
        """Wait for a slot; returns seconds waited. Raises OverloadedError (503)."""
        start = time.perf_counter()
        if not self._sem.locked():
            await self._sem.acquire()  # a free slot: returns at once, without yielding
        else:
            if self._waiting >= self._queue_size:
                raise self._overloaded(f"{self._waiting} requests already waiting")
            self._waiting += 1
            self._metrics.queued.set(self._waiting)
            try:
                await asyncio.wait_for(self._sem.acquire(), self._timeout)
            except asyncio.TimeoutError:
                raise self._overloaded(f"no free slot within {self._timeout:g} s") from None
            finally:
                self._waiting -= 1
                self._metrics.queued.set(self._waiting)
        self._metrics.in_flight.inc()
        waited = time.perf_counter() - start
        self._metrics.queue_wait.observe(waited)
        return waited

    def release(self) -> None:
        self._metrics.in_flight.dec()
        self._sem.release()


@dataclass
class Chunk:
    """Text to send."""

    text: str


@dataclass
class Outcome:
    """How a generation ended (filled in when the stream ends)."""

    finish_reason: str = "stop"
    completion_tokens: int = 0
    ttft_s: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    queue_wait_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


async def generate(
    engine: Engine,
    prompt_ids: list[int],
    params: SamplingParams,
    stops: Sequence[str],
    *,
    arrival: float,
    queue_wait_s: float,
    outcome: Outcome,
    metrics: LLMMetrics,
    endpoint: str,
    request_id: str,
) -> AsyncIterator[Chunk]:
    """Stream text chunks for a prompt; `outcome` is complete when the iterator ends."""
    started = time.perf_counter()
    outcome.queue_wait_s = queue_wait_s
    stopper = StopMatcher(stops)
    detok: IncrementalDetokenizer | None = None
    first: float | None = None
    last = started
    produced = 0
    finish = "stop"
    stream = engine.stream(prompt_ids, params)
    try:
        async for delta in stream:
            if delta.n_tokens:
                now = time.perf_counter()
                if first is None:
                    first = now
                last = now
                produced += delta.n_tokens
            if delta.text is not None:
                text = delta.text
            else:
                if detok is None:
                    detok = IncrementalDetokenizer(engine.tokenizer, prompt_ids)
                text = detok.add(delta.token_ids)
                if delta.finish_reason:
                    text += detok.flush()
            if delta.finish_reason:
                finish = delta.finish_reason
            out = stopper.feed(text)
            if out:
                yield Chunk(out)
            if stopper.stopped:
                finish = "stop"
                break
        tail = stopper.flush()
        if tail:
            yield Chunk(tail)
    except EngineError as e:
        log.error("request %s: engine error: %s", request_id, e)
        raise InternalEngineError(f"generation failed: {e}") from e
    finally:
        # Closing the engine stream cancels the generation (stop string, client gone, error).
        try:
            await stream.aclose()  # type: ignore[attr-defined]
        except Exception:
            log.warning("request %s: closing the engine stream failed", request_id, exc_info=True)
        _record(outcome, metrics, endpoint, request_id, arrival, started, first, last, produced,
                len(prompt_ids), finish)


def _record(outcome: Outcome, metrics: LLMMetrics, endpoint: str, request_id: str, arrival: float,
            started: float, first: float | None, last: float, produced: int, n_prompt: int,
            finish: str) -> None:
    outcome.finish_reason = finish
    outcome.completion_tokens = produced
    metrics.prompt_tokens.inc(n_prompt)
    metrics.completion_tokens.inc(produced)
    if first is not None:
        outcome.ttft_s = first - arrival
        metrics.ttft.labels(endpoint).observe(outcome.ttft_s)
        prefill = first - started
        if prefill > 0:
            outcome.prefill_tps = n_prompt / prefill
            metrics.prefill_tps.observe(outcome.prefill_tps)
        if produced > 1 and last > first:
            outcome.decode_tps = (produced - 1) / (last - first)
            metrics.decode_tps.observe(outcome.decode_tps)
    total = time.perf_counter() - arrival
    metrics.request.labels(endpoint).observe(total)
    outcome.timings = {
        "queue_ms": round(outcome.queue_wait_s * 1000, 2),
        "ttft_ms": round((outcome.ttft_s or 0.0) * 1000, 2),
        "prefill_tokens_per_s": round(outcome.prefill_tps or 0.0, 1),
        "decode_tokens_per_s": round(outcome.decode_tps or 0.0, 1),
        "total_ms": round(total * 1000, 2),
    }
    log.info("request %s %s: prompt %d tok, completion %d tok, finish %s, queue %.1f ms, ttft %.1f ms, "
             "prefill %.0f tok/s, decode %.1f tok/s, total %.0f ms", request_id, endpoint, n_prompt, produced,
             finish, outcome.timings["queue_ms"], outcome.timings["ttft_ms"],
             outcome.timings["prefill_tokens_per_s"], outcome.timings["decode_tokens_per_s"], total * 1000)


class Run:
    """One admitted generation: its chunks, its outcome, and its slot, released exactly once."""

    def __init__(self, engine: Engine, admission: Admission, metrics: LLMMetrics, ids: list[int],
                 params: SamplingParams, stops: Sequence[str], *, arrival: float, waited: float, endpoint: str,
                 request_id: str) -> None:
        self.ids, self.outcome, self.endpoint = ids, Outcome(), endpoint
        self._admission, self._metrics = admission, metrics
        self._released = False
        self.chunks = generate(engine, ids, params, stops, arrival=arrival, queue_wait_s=waited,
                               outcome=self.outcome, metrics=metrics, endpoint=endpoint, request_id=request_id)

    def release(self, status: str) -> None:
        """Give the slot back and count the request as `status` (ok, error, cancelled); once only."""
        if not self._released:
            self._released = True
            self._admission.release()
            self._metrics.requests.labels(self.endpoint, status).inc()
