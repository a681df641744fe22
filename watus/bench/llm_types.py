"""Shared types of `watus bench llm`: its settings, its error, and the records of what was timed.

Kept apart from the orchestration (`watus.bench.llm`), the target drivers (`llm_targets`, `llm_local`)
and the report (`llm_report`) so they can all use them without importing each other.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watus.bench.stats import Summary, summarize
from watus.core.telemetry import TelemetrySummary

METRICS = ("ttft_ms", "prefill_tps", "decode_tps", "wall_ms", "prompt_tokens", "completion_tokens",
           "server_prefill_tps", "server_decode_tps")


class BenchError(Exception):
    """A target could not be started, or answered with an error."""


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))  # trt_server's own default (WATUS_LLM_THREADS)


@dataclass(frozen=True)
class BenchConfig:
    """How every target is measured; the same for all targets of one run."""

    runs: int = 10
    warmup: int = 2
    prompt_tokens: int = 128
    max_tokens: int = 128
    concurrency: tuple[int, ...] = (1, 2, 4)
    #: Rounds per concurrency level; each round starts all streams at once.
    concurrency_rounds: int = 2
    threads: int = field(default_factory=_default_threads)
    #: Context per sequence (llama.cpp n_ctx per slot; WATUS_LLM_CONTEXT_LENGTH).
    context_length: int = 2048
    #: Parallel sequences of llama.cpp's server and of `self:` (WATUS_LLM_MAX_CONCURRENT).
    slots: int = 2
    chat: bool = False
    model: str | None = None
    api_key: str | None = None
    seed: int = 1234
    timeout_s: float = 300.0
    startup_timeout_s: float = 180.0
    telemetry_interval_s: float = 0.25
    #: Spec of the target that is "our server" in the goal check; default: the `self:` target.
    ours: str | None = None
    #: Timed runs per variant of the sampling-features comparison (`FEATURE_VARIANTS`) on our server
    #: (`ours`, default the `self:` target), interleaved in one run; 0 skips it.
    feature_runs: int = 3


#: The same request plain, with log-probabilities (5 alternatives per token), and with two choices:
#: name -> (extra body for completions, extra body for chat).
FEATURE_VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "plain": ({}, {}),
    "logprobs (top 5)": ({"logprobs": 5}, {"logprobs": True, "top_logprobs": 5}),
    "n=2": ({"n": 2}, {"n": 2}),
}


@dataclass
class RunResult:
    """One timed generation. Rates are None where they cannot be computed (e.g. one output token)."""

    target: str
    phase: str  # "run" or "concurrency"
    index: int
    concurrency: int = 1
    error: str | None = None
    ttft_ms: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    wall_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: Chunks that carried text: equals completion tokens when the target streams token by token.
    chunks: int = 0
    #: Ollama's own figures (prompt_eval_count/duration, eval_count/duration); None elsewhere.
    server_prefill_tps: float | None = None
    server_decode_tps: float | None = None
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass
class StreamTiming:
    """Arrival times of one stream on `time.perf_counter()`."""

    start: float
    first: float | None = None
    last: float | None = None
    finish: float | None = None
    end: float | None = None
    chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    server_prefill_tps: float | None = None
    server_decode_tps: float | None = None

    def text(self, t: float, text: str) -> None:
        if text:
            self.chunks += 1
            if self.first is None:
                self.first = t
            self.last = t

    def result(self, target: str, phase: str, index: int, concurrency: int = 1) -> RunResult:
        end = self.end if self.end is not None else time.perf_counter()
        completion = self.completion_tokens if self.completion_tokens is not None else self.chunks
        ttft_s = self.first - self.start if self.first is not None else None
        # End of generation: the chunk carrying finish_reason (llama.cpp sends it just after the last
        # token, vLLM with it); the last text chunk if the target sends none.
        gen_end = self.finish if self.finish is not None and self.first is not None else self.last
        decode = None
        if self.first is not None and gen_end is not None and completion > 1 and gen_end > self.first:
            decode = (completion - 1) / (gen_end - self.first)
        prefill = self.prompt_tokens / ttft_s if self.prompt_tokens and ttft_s else None
        return RunResult(
            target=target, phase=phase, index=index, concurrency=concurrency,
            ttft_ms=ttft_s * 1000 if ttft_s is not None else None, prefill_tps=prefill, decode_tps=decode,
            wall_ms=(end - self.start) * 1000, prompt_tokens=self.prompt_tokens, completion_tokens=completion,
            chunks=self.chunks, server_prefill_tps=self.server_prefill_tps,
            server_decode_tps=self.server_decode_tps, start_s=self.start, end_s=end,
        )


def openai_chunk(st: StreamTiming, chunk: dict[str, Any], t: float, chat: bool) -> None:
    """Account one OpenAI-style chunk (SSE event or llama.cpp callback) arriving at `t`."""
    if "error" in chunk:
        err = chunk["error"]
        raise BenchError(str(err.get("message", err)) if isinstance(err, dict) else str(err))
    for choice in chunk.get("choices") or ():
        if chat:
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or ""
        else:
            text = choice.get("text") or ""
        st.text(t, text)
        if choice.get("finish_reason"):
            st.finish = t  # the last choice's (n > 1) ends the generation
    usage = chunk.get("usage")
    if usage:
        st.prompt_tokens = usage.get("prompt_tokens")
        st.completion_tokens = usage.get("completion_tokens")


@dataclass
class ConcurrencyLevel:
    """Rounds of `concurrency` streams started together against one target."""

    concurrency: int
    #: Per round: completion tokens of all streams / (last stream end − first stream start).
    aggregate_tps: list[float] = field(default_factory=list)
    streams: list[RunResult] = field(default_factory=list)

    def summary(self) -> dict[str, Summary | None]:
        ok = [s for s in self.streams if s.error is None]
        return {"aggregate_tps": summarize(self.aggregate_tps),
                "stream_decode_tps": summarize(s.decode_tps for s in ok),
                "ttft_ms": summarize(s.ttft_ms for s in ok)}

    @property
    def errors(self) -> int:
        return sum(1 for s in self.streams if s.error is not None)


@dataclass
class FeatureVariant:
    """Timed runs of one `FEATURE_VARIANTS` request; decode tok/s counts the tokens of all choices."""

    name: str
    runs: list[RunResult] = field(default_factory=list)

    def summary(self) -> dict[str, Summary | None]:
        ok = [r for r in self.runs if r.error is None]
        return {m: summarize(getattr(r, m) for r in ok) for m in ("decode_tps", "ttft_ms", "wall_ms",
                                                                  "completion_tokens")}

    @property
    def errors(self) -> int:
        return sum(1 for r in self.runs if r.error is not None)


@dataclass
class TargetResult:
    spec: str
    kind: str
    model: str | None = None
    error: str | None = None
    ignore_eos: bool = True
    prompt_words: int = 0
    calibrated_prompt_tokens: int | None = None
    runs: list[RunResult] = field(default_factory=list)
    concurrency: list[ConcurrencyLevel] = field(default_factory=list)
    features: list[FeatureVariant] = field(default_factory=list)
    telemetry: TelemetrySummary | None = None
    #: CPU % of the whole machine used by processes other than ours (this one and the servers it
    #: started) during the timed runs: a busy machine explains slow, noisy figures.
    other_cpu_percent: float | None = None

    def stats(self) -> dict[str, Summary | None]:
        ok = [r for r in self.runs if r.error is None]
        return {m: summarize(getattr(r, m) for r in ok) for m in METRICS}

    @property
    def errors(self) -> int:
        return sum(1 for r in self.runs if r.error is not None)


@dataclass
class BenchResult:
    config: BenchConfig
    machine: dict[str, str]
    started: str
    targets: list[TargetResult] = field(default_factory=list)
    jsonl_path: Path | None = None
