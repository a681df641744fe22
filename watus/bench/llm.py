"""`watus bench llm`: time LLM serving targets side by side with the same prompt, output and clock.

The Jetson/Ollama report this grew from timed a handful of runs with one client and one server. To say
whether our `trt_server` costs anything over the engine it wraps, the same work has to be timed on
every target with the same method: a prompt of a fixed token length (calibrated against each target's
own tokenizer through the `usage` it reports), a fixed output length (`ignore_eos` where the target
honours it), temperature 0, warm-up runs, and timestamps taken where bytes arrive (raw httpx SSE, no
SDK) or, in-process, where llama.cpp's callback fires. Every prompt starts with a fresh number so no
target serves a cached prefix. Targets run one after the other and are released before the next, so
two never compete for the CPU.

Targets (`kind:value`):
- `openai:<base_url>`: any OpenAI-compatible server (trt_server, vLLM, trtllm-serve, llama.cpp).
- `ollama:<base_url>`: Ollama's native `/api/generate` (or `/api/chat`), with Ollama's own timings.
- `inprocess:<gguf|default>`: llama.cpp through `xllamacpp.Server.handle_completions`, no HTTP at all:
  the reference our server must reach 0.95x of.
- `llamacpp-server:<gguf|default>`: llama.cpp's built-in HTTP server from the same wheel.
- `self:[KEY=VALUE,...]`: starts `python -m trt_server` on a free port with those env settings.

Modules: this one holds the prompt calibration and the orchestration (`bench_target`, `run_benchmark`)
and re-exports the public names; `llm_types` holds the settings and result records, `llm_targets` the
target specs, the HTTP drivers and `open_target`, `llm_local` the in-process llama.cpp and `self:`
trt_server targets, `llm_report` the goal check, the Markdown section and the JSONL.
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil

from watus.bench.llm_report import GoalCheck, goal_checks, goal_verdict, render_markdown, write_jsonl
from watus.bench.llm_targets import Driver, OpenAIDriver, TargetKind, TargetSpec, open_target, parse_target
from watus.bench.llm_types import (
    FEATURE_VARIANTS,
    BenchConfig,
    BenchError,
    BenchResult,
    ConcurrencyLevel,
    FeatureVariant,
    RunResult,
    StreamTiming,
    TargetResult,
)
from watus.bench.procs import own_cpu_seconds
from watus.core.telemetry import TelemetrySampler, TelemetrySummary

__all__ = [
    "DEFAULT_TARGETS",
    "BenchConfig",
    "BenchError",
    "BenchResult",
    "GoalCheck",
    "ProgressFn",
    "StreamTiming",
    "TargetKind",
    "TargetResult",
    "TargetSpec",
    "bench_target",
    "build_prompt",
    "calibrate_prompt",
    "goal_checks",
    "goal_verdict",
    "parse_target",
    "render_markdown",
    "run_benchmark",
    "write_jsonl",
]

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("self:", "inprocess:default", "llamacpp-server:default")
# Common words that are one token each in the usual BPE vocabularies, so the prompt grows one token
# per word and calibration converges in a step or two.
_FILLER = ("the", "robot", "stands", "in", "the", "hall", "and", "watches", "people", "walk", "past",
           "while", "it", "listens", "for", "its", "name", "and", "answers", "short", "questions",
           "about", "what", "it", "sees", "around", "it")

#: Called between runs: (target, runs done, runs in all).
ProgressFn = Callable[[str, int, int], None]


def build_prompt(words: int, nonce: int) -> str:
    """A deterministic prompt of `words` filler words after a 5-digit number unique to the run.

    The number's first digit changes from one run to the next, so even the first token differs from
    the previous prompts and no prefix cache (llama.cpp slots, vLLM blocks, Ollama) can serve it.
    """
    number = f"{nonce % 9 + 1}{nonce % 10_000:04d}"
    filler = " ".join(_FILLER[i % len(_FILLER)] for i in range(words))
    return f"{number}. {filler}" if filler else f"{number}."


def calibrate_prompt(count: Callable[[str], int | None], target_tokens: int,
                     nonces: Iterator[int], max_steps: int = 10) -> tuple[int, int | None]:
    """Filler words that make the target report `target_tokens` prompt tokens.

    `count(prompt)` asks the target (one output token) and returns its reported prompt_tokens. The
    search brackets the goal and interpolates (a tokenizer may spend more than one token per word).
    Returns (words, tokens the target reported): the closest not above the goal if it cannot be hit.
    """
    words = max(0, target_tokens - 6)
    seen: dict[int, int] = {}
    for _ in range(max_steps):
        n = count(build_prompt(words, next(nonces)))
        if n is None:
            log.warning("the target reports no prompt_tokens; using %d filler words uncalibrated", words)
            return words, None
        seen[words] = n
        if n == target_tokens:
            return words, n
        nxt = _next_guess(seen, target_tokens)
        if nxt is None or nxt in seen:
            break
        words = nxt
    best = min(seen, key=lambda w: (seen[w] > target_tokens, abs(seen[w] - target_tokens)))
    return best, seen[best]


def _next_guess(seen: dict[int, int], goal: int) -> int | None:
    below = [w for w, n in seen.items() if n < goal]
    above = [w for w, n in seen.items() if n > goal]
    lo = max(below) if below else None
    hi = min(above) if above else None
    if lo is not None and hi is not None:
        if hi - lo <= 1:
            return None
        guess = lo + round((goal - seen[lo]) * (hi - lo) / (seen[hi] - seen[lo]))
        return min(hi - 1, max(lo + 1, guess))
    ws = sorted(seen)
    slope = 1.0
    if len(ws) >= 2 and seen[ws[-1]] != seen[ws[0]]:
        slope = max(0.25, (seen[ws[-1]] - seen[ws[0]]) / (ws[-1] - ws[0]))
    if lo is not None:
        return lo + max(1, round((goal - seen[lo]) / slope))
    assert hi is not None
    return None if hi == 0 else max(0, hi - max(1, round((seen[hi] - goal) / slope)))


def _timed(driver: Driver, prompt: str, cfg: BenchConfig, label: str, phase: str, index: int,
           concurrency: int = 1, extra: dict[str, Any] | None = None) -> RunResult:
    start = time.perf_counter()
    try:
        if extra and isinstance(driver, OpenAIDriver):
            timing = driver.generate(prompt, cfg.max_tokens, extra)
        else:
            timing = driver.generate(prompt, cfg.max_tokens)
        return timing.result(label, phase, index, concurrency)
    except (BenchError, httpx.HTTPError, ValueError) as e:  # ValueError: a body that is not JSON
        log.warning("%s %s #%d failed: %s", label, phase, index, e)
        return RunResult(target=label, phase=phase, index=index, concurrency=concurrency,
                         error=f"{type(e).__name__}: {e}", start_s=start, end_s=time.perf_counter())


def _other_cpu_percent(tel: TelemetrySummary, own_cpu_s: float) -> float | None:
    if tel.cpu_percent is None or tel.duration_s <= 0:
        return None
    own = own_cpu_s / tel.duration_s / (psutil.cpu_count() or 1) * 100.0
    return max(0.0, tel.cpu_percent.mean - own)


def _concurrency_level(driver: Driver, cfg: BenchConfig, label: str, c: int, words: int,
                       nonces: Iterator[int], tick: Callable[[int], None]) -> ConcurrencyLevel:
    level = ConcurrencyLevel(concurrency=c)
    with ThreadPoolExecutor(max_workers=c, thread_name_prefix=f"bench-c{c}") as pool:
        for rnd in range(cfg.concurrency_rounds):
            prompts = [build_prompt(words, next(nonces)) for _ in range(c)]
            barrier = threading.Barrier(c, timeout=60.0)

            def one(i: int, prompts: list[str] = prompts, barrier: threading.Barrier = barrier,
                    rnd: int = rnd) -> RunResult:
                barrier.wait()  # all streams leave together
                return _timed(driver, prompts[i], cfg, label, "concurrency", rnd * c + i, c)

            streams = list(pool.map(one, range(c)))
            level.streams.extend(streams)
            ok = [s for s in streams if s.error is None]
            if ok:
                span = max(s.end_s for s in ok) - min(s.start_s for s in ok)
                tokens = sum(s.completion_tokens or 0 for s in ok)
                if span > 0:
                    level.aggregate_tps.append(tokens / span)
            tick(c)
    return level


def _feature_runs(driver: OpenAIDriver, cfg: BenchConfig, label: str, words: int, nonces: Iterator[int],
                  tick: Callable[[int], None]) -> list[FeatureVariant]:
    variants = [FeatureVariant(name) for name in FEATURE_VARIANTS]
    for i in range(cfg.feature_runs):
        for v in variants:
            completions, chat = FEATURE_VARIANTS[v.name]
            extra = chat if cfg.chat else completions
            v.runs.append(_timed(driver, build_prompt(words, next(nonces)), cfg, label, f"feature:{v.name}", i,
                                 extra=extra))
            tick(1)
    return variants


def bench_target(spec: TargetSpec, cfg: BenchConfig, log_dir: Path,
                 progress: ProgressFn | None = None) -> TargetResult:
    """Load the target, calibrate the prompt, warm up, time the runs and the concurrency sweep.

    Never raises for a target that fails: the error is in the result, so other targets still run.
    """
    result = TargetResult(spec=spec.spec, kind=spec.kind.value)
    is_http = spec.kind is not TargetKind.inprocess
    sweep = [c for c in cfg.concurrency if c >= 1] if is_http else []
    is_ours = spec.spec == cfg.ours if cfg.ours else spec.kind is TargetKind.self_server
    features = cfg.feature_runs if is_ours and spec.kind in (TargetKind.self_server, TargetKind.openai) else 0
    total = cfg.warmup + cfg.runs + cfg.concurrency_rounds * sum(sweep) + features * len(FEATURE_VARIANTS)
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(spec.spec, done, total)

    try:
        with open_target(spec, cfg, log_dir) as driver:
            result.model = driver.model
            nonces = itertools.count(1)
            words, measured = calibrate_prompt(lambda p: driver.generate(p, 1).prompt_tokens,
                                               cfg.prompt_tokens, nonces)
            result.prompt_words, result.calibrated_prompt_tokens = words, measured
            for _ in range(cfg.warmup):
                driver.generate(build_prompt(words, next(nonces)), cfg.max_tokens)
                tick()
            own_cpu = own_cpu_seconds()
            with TelemetrySampler(cfg.telemetry_interval_s) as sampler:
                for i in range(cfg.runs):
                    result.runs.append(_timed(driver, build_prompt(words, next(nonces)), cfg, spec.spec,
                                              "run", i))
                    tick()
            result.telemetry = sampler.summary()
            result.other_cpu_percent = _other_cpu_percent(result.telemetry, own_cpu_seconds() - own_cpu)
            if result.other_cpu_percent is not None and result.other_cpu_percent > 10.0:
                log.warning("%s: other processes used %.0f%% of the CPU during the timed runs; figures are "
                            "noisy", spec.spec, result.other_cpu_percent)
            for c in sweep:
                result.concurrency.append(_concurrency_level(driver, cfg, spec.spec, c, words, nonces, tick))
            if features and isinstance(driver, OpenAIDriver):
                result.features = _feature_runs(driver, cfg, spec.spec, words, nonces, tick)
            result.ignore_eos = driver.ignore_eos
    except (BenchError, httpx.HTTPError, OSError, ValueError) as e:
        log.error("target %s failed: %s", spec.spec, e)
        result.error = f"{type(e).__name__}: {e}"
    return result


def run_benchmark(specs: list[TargetSpec], cfg: BenchConfig, out_dir: Path,
                  progress: ProgressFn | None = None) -> BenchResult:
    """Benchmark each target in turn (never two loaded at once) and write the JSONL to `out_dir`."""
    from watus.bench import machine_info

    started = datetime.now(timezone.utc)
    result = BenchResult(config=cfg, machine=machine_info(("xllamacpp", "httpx")),
                         started=started.isoformat(timespec="seconds"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        result.targets.append(bench_target(spec, cfg, out_dir, progress))
        gc.collect()
    result.jsonl_path = out_dir / f"llm-{started.strftime('%Y%m%d-%H%M%S')}.jsonl"
    write_jsonl(result.jsonl_path, result)
    return result
