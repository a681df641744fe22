"""The generation core shared by both endpoints: a request's engine streams, text, stops, timings.

`generate` turns one engine stream's deltas into text chunks (with the log-probabilities of the tokens
each chunk completes, when asked) and records time to first token, prefill and decode speed and queue
wait, as Prometheus histograms and one log line per stream. `Run` is one admitted request (admission is
`trt_server.admission`): one `Stream` per choice (`n`, several prompts), over the slots it was given,
which it gives back exactly once however it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from trt_server.admission import Admission
from trt_server.engines.base import Engine, EngineError, SamplingParams, TokenLogprob
from trt_server.errors import InternalEngineError
from trt_server.logprobs import TokenQueue, with_text
from trt_server.textstream import IncrementalDetokenizer, StopMatcher
from watus.core import metrics as m
from watus.core.drain import Drain

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
        self.cached_prompt_tokens = m.counter("watus_llm_prompt_tokens_cached", "Prompt tokens the engine "
                                              "reused from its prompt cache (not prefilled again).", registry)
        self.completion_tokens = m.counter("watus_llm_completion_tokens", "Tokens generated.", registry)
        self.requests = m.counter("watus_llm_requests", "Finished requests.", registry,
                                  ("endpoint", "status"))
        self.rejected = m.counter("watus_llm_rejected", "Requests refused because the queue was full.",
                                  registry)
        self.in_flight = m.gauge("watus_llm_requests_running", "Requests generating now.", registry)
        self.queued = m.gauge("watus_llm_requests_waiting", "Requests waiting for a slot.", registry)


@dataclass
class Chunk:
    """Text to send, and (when asked) the tokens whose text it completes."""

    text: str
    logprobs: list[TokenLogprob] | None = None


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
    #: Prompt tokens the engine reused from its prompt cache (None: it did not say).
    cached_tokens: int | None = None
    #: perf_counter() of the first and last generated token (None before the first).
    first_s: float | None = None
    last_s: float | None = None


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a request: the choice it answers, its prompt and its sampling."""

    index: int
    prompt_ids: list[int]
    params: SamplingParams


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
    limiter: asyncio.Semaphore | None = None,
    drain: Drain | None = None,
) -> AsyncIterator[Chunk]:
    """Stream text chunks for a prompt; `outcome` is complete when the iterator ends.

    `limiter`: the slots of a request with more streams than slots, taken before generating. `drain`: the
    server's stop; once its time has run out the stream ends at its next token with `ShuttingDownError`.
    """
    turn_wait = 0.0
    if limiter is not None:
        before = time.perf_counter()
        await limiter.acquire()
        turn_wait = time.perf_counter() - before
    started = time.perf_counter()
    outcome.queue_wait_s = queue_wait_s + turn_wait
    stopper = StopMatcher(stops)
    tokens = TokenQueue() if params.logprobs is not None else None
    detok: IncrementalDetokenizer | None = None
    first: float | None = None
    last = started
    produced = 0
    finish = "stop"
    stream = engine.stream(prompt_ids, params)
    try:
        async for delta in stream:
            if drain is not None and drain.expired:
                finish = "shutdown"
                raise drain.cut_off()
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
            if delta.cached_tokens is not None:
                outcome.cached_tokens = min(delta.cached_tokens, len(prompt_ids))
            out = stopper.feed(text)
            if tokens is None:
                if out:
                    yield Chunk(out)
            else:
                if delta.logprobs:
                    tokens.add(with_text(delta.logprobs, engine.tokenizer))
                done = tokens.sent(out)
                if out or done:
                    yield Chunk(out, done)
            if stopper.stopped:
                finish = "stop"
                break
        tail = stopper.flush()
        if tokens is None:
            if tail:
                yield Chunk(tail)
        else:
            done = tokens.sent(tail) + tokens.finish(cut=stopper.stopped)
            if tail or done:
                yield Chunk(tail, done)
    except EngineError as e:
        log.error("request %s: engine error: %s", request_id, e)
        raise InternalEngineError(f"generation failed: {e}") from e
    finally:
        # Closing the engine stream cancels the generation (stop string, client gone, error).
        try:
            await stream.aclose()  # type: ignore[attr-defined]
        except Exception:
            log.warning("request %s: closing the engine stream failed", request_id, exc_info=True)
        if limiter is not None:
            limiter.release()
        _record(outcome, metrics, endpoint, request_id, arrival, started, first, last, produced,
                len(prompt_ids), finish)


def _record(outcome: Outcome, metrics: LLMMetrics, endpoint: str, request_id: str, arrival: float,
            started: float, first: float | None, last: float, produced: int, n_prompt: int,
            finish: str) -> None:
    outcome.finish_reason = finish
    outcome.completion_tokens = produced
    outcome.first_s, outcome.last_s = first, (last if first is not None else None)
    metrics.prompt_tokens.inc(n_prompt)
    if outcome.cached_tokens:
        metrics.cached_prompt_tokens.inc(outcome.cached_tokens)
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
    log.info("request %s %s: prompt %d tok (%s cached), completion %d tok, finish %s, queue %.1f ms, ttft %.1f ms, "
             "prefill %.0f tok/s, decode %.1f tok/s, total %.0f ms", request_id, endpoint, n_prompt,
             "?" if outcome.cached_tokens is None else outcome.cached_tokens, produced,
             finish, outcome.timings["queue_ms"], outcome.timings["ttft_ms"],
             outcome.timings["prefill_tokens_per_s"], outcome.timings["decode_tokens_per_s"], total * 1000)


def merged_timings(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """The `timings` of a request: its one stream's, or for several the request as a whole."""
    if len(outcomes) == 1:
        return outcomes[0].timings
    firsts = [o.first_s for o in outcomes if o.first_s is not None]
    lasts = [o.last_s for o in outcomes if o.last_s is not None]
    after_first = sum(max(0, o.completion_tokens - 1) for o in outcomes if o.first_s is not None)
    span = max(lasts) - min(firsts) if firsts and lasts else 0.0
    return {
        "queue_ms": max(o.timings.get("queue_ms", 0.0) for o in outcomes),
        "ttft_ms": min((o.timings.get("ttft_ms", 0.0) for o in outcomes if o.first_s is not None), default=0.0),
        "prefill_tokens_per_s": round(sum(o.prefill_tps or 0.0 for o in outcomes), 1),
        # All streams together: what the engine's slots produced side by side.
        "decode_tokens_per_s": round(after_first / span, 1) if span > 0 else 0.0,
        "total_ms": max(o.timings.get("total_ms", 0.0) for o in outcomes),
    }


@dataclass
class Stream:
    """One choice of a request: its prompt, its text chunks, and how it ended."""

    index: int
    ids: list[int]
    outcome: Outcome
    chunks: AsyncIterator[Chunk]


class Run:
    """One admitted request: a stream per choice, and its slots, given back exactly once."""

    def __init__(self, engine: Engine, admission: Admission, metrics: LLMMetrics, specs: Sequence[StreamSpec],
                 stops: Sequence[str], *, arrival: float, waited: float, weight: int, endpoint: str,
                 request_id: str, drain: Drain | None = None) -> None:
        self.endpoint = endpoint
        self._admission, self._metrics, self._weight = admission, metrics, weight
        self._released = False
        # More streams than slots: they take turns on the request's slots.
        limiter = asyncio.Semaphore(weight) if len(specs) > weight else None
        self.streams: list[Stream] = []
        for spec in specs:
            outcome = Outcome()
            rid = request_id if len(specs) == 1 else f"{request_id}/{spec.index}"
            chunks = generate(engine, spec.prompt_ids, spec.params, stops, arrival=arrival, queue_wait_s=waited,
                              outcome=outcome, metrics=metrics, endpoint=endpoint, request_id=rid,
                              limiter=limiter, drain=drain)
            self.streams.append(Stream(spec.index, spec.prompt_ids, outcome, chunks))

    def release(self, status: str) -> None:
        """Give the slots back and count the request as `status` (ok, error, cancelled); once only."""
        if not self._released:
            self._released = True
            self._admission.release(self._weight)
            self._metrics.requests.labels(self.endpoint, status).inc()
