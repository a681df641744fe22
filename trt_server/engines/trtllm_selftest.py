"""A short self-test of the TensorRT-LLM engine on the real library, for `watus doctor` on the robot.

What differs between TensorRT-LLM versions (the output objects, the executor's name, how a request is
cancelled) only shows on the real library, so the doctor loads the configured engine and:
1. generates a few tokens greedily and checks the finish reason ("stop" or "length", on the last delta
   only, "length" exactly at the budget) and the timing fields (time to first token, decode rate, total);
2. closes a second request after its first tokens, times the close, names the way the request was
   cancelled (or that it could not be), and checks that a third request still completes.
The engine loads with at most `KV_CACHE_FRACTION` of the free GPU memory for its KV cache: a few tokens
need little, and on an Orin the running LLM service may hold most of the memory already.

Which engine is tested comes from the LLM server's settings (`plan`): the one `WATUS_LLM_ENGINE=trtllm`
names, or, where only tensorrt_llm is installed, a `WATUS_LLM_MODEL_PATH` that is an engine directory;
elsewhere the doctor's row says it was skipped and why.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import time
from dataclasses import dataclass

from pydantic import ValidationError

from trt_server.engines.base import EngineDelta, EngineError, ModelNotFoundError, SamplingParams
from trt_server.engines.trtllm import TrtLlmConfig, TrtLlmEngine
from trt_server.engines.trtllm_dir import resolve_engine_dir
from trt_server.settings import EngineKind, LLMSettings

log = logging.getLogger(__name__)

#: Largest share of free GPU memory the self-test's KV cache takes.
KV_CACHE_FRACTION = 0.05
#: Tokens of the first request.
MAX_TOKENS = 4
#: The early-closed request's budget (it is closed after its first tokens) and how long closing may take.
LONG_MAX_TOKENS = 64
CLOSE_LIMIT_S = 10.0
PROMPT = "The capital of France is"


class SelfTestError(EngineError):
    """The engine loaded but did not behave as the server needs."""


@dataclass(frozen=True)
class SelfTestReport:
    """What the self-test saw."""

    version: str
    api: str
    tokens: int
    finish_reason: str
    text: str
    ttft_ms: float
    #: None with fewer than two tokens.
    decode_tokens_per_s: float | None
    total_ms: float
    close_ms: float
    cancel: str

    def summary(self) -> str:
        decode = f", decode {self.decode_tokens_per_s:.1f} tok/s" if self.decode_tokens_per_s else ""
        return (f"TensorRT-LLM {self.version or '?'} ({self.api}): {self.tokens} tokens {self.text!r}, finish "
                f"{self.finish_reason}, ttft {self.ttft_ms:.0f} ms{decode}; closed early in {self.close_ms:.0f} ms "
                f"(cancel: {self.cancel or 'not needed'})")


@dataclass(frozen=True)
class Skip:
    """Why there is no engine to self-test."""

    reason: str
    #: True where not testing is itself a problem (settings that do not validate).
    problem: bool = False


def plan(settings: LLMSettings) -> TrtLlmConfig | Skip:
    """The engine to self-test, or why there is none (the doctor says it was skipped, and why)."""
    if settings.engine is not EngineKind.trtllm:
        if importlib.util.find_spec("tensorrt_llm") is None:
            return Skip(f"WATUS_LLM_ENGINE={settings.engine.value} and tensorrt_llm is not installed")
        try:
            resolve_engine_dir(settings.model_path)
        except ModelNotFoundError:
            return Skip(f"tensorrt_llm is installed, but WATUS_LLM_ENGINE={settings.engine.value} and "
                        "WATUS_LLM_MODEL_PATH names no TensorRT-LLM engine directory")
    # WATUS_LLM_ENGINE=trtllm: whatever is missing (the library, the engine) is the test's finding.
    return TrtLlmConfig(
        engine_dir=settings.model_path,
        context_length=settings.context_length,
        kv_cache_free_gpu_memory_fraction=min(settings.kv_cache_free_gpu_memory_fraction, KV_CACHE_FRACTION),
        tokenizer_dir=settings.tokenizer_path,
        model_name=settings.model_name,
    )


async def self_test(engine: TrtLlmEngine) -> SelfTestReport:
    """Run the checks on a loaded engine; raises SelfTestError (or the engine's EngineError)."""
    backend = engine.backend
    if backend is None:
        raise SelfTestError("engine not loaded")
    prompt = engine.tokenizer.encode(PROMPT, add_special=True)
    started = time.perf_counter()
    first: float | None = None
    deltas: list[EngineDelta] = []
    async for delta in engine.stream(prompt, SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)):
        if delta.n_tokens and first is None:
            first = time.perf_counter()
        deltas.append(delta)
    end = time.perf_counter()
    ids = [i for d in deltas for i in d.token_ids]
    finish = _check_finish(deltas, len(ids))
    ttft_ms = ((first or end) - started) * 1000
    decode = (len(ids) - 1) / (end - first) if first is not None and len(ids) > 1 and end > first else None
    total_ms = (end - started) * 1000
    for name, value in (("ttft_ms", ttft_ms), ("total_ms", total_ms), ("decode_tokens_per_s", decode)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise SelfTestError(f"timing {name} is {value}")
    close_ms = await _close_early(engine, prompt)
    return SelfTestReport(version=str(engine.info().get("tensorrt_llm_version") or ""), api=backend.api,
                          tokens=len(ids), finish_reason=finish, text=engine.tokenizer.decode(ids),
                          ttft_ms=ttft_ms, decode_tokens_per_s=decode, total_ms=total_ms, close_ms=close_ms,
                          cancel=backend.last_cancel)


def _check_finish(deltas: list[EngineDelta], tokens: int) -> str:
    if not deltas:
        raise SelfTestError("the engine streamed nothing")
    *steps, last = deltas
    if any(d.finish_reason for d in steps):
        raise SelfTestError("a finish reason came before the last delta")
    if last.finish_reason not in ("stop", "length"):
        raise SelfTestError(f"the last delta's finish reason is {last.finish_reason!r}, not stop or length")
    if tokens > MAX_TOKENS or (last.finish_reason == "length" and tokens != MAX_TOKENS):
        raise SelfTestError(f"{tokens} tokens with finish {last.finish_reason} for max_tokens {MAX_TOKENS}")
    return last.finish_reason


async def _close_early(engine: TrtLlmEngine, prompt: list[int]) -> float:
    """Close a long request after its first tokens; ms the close took. A third request must then finish."""
    stream = engine.stream(prompt, SamplingParams(max_tokens=LONG_MAX_TOKENS, ignore_eos=True))
    async for delta in stream:
        if delta.n_tokens or delta.finish_reason:
            break
    started = time.perf_counter()
    await asyncio.wait_for(stream.aclose(), CLOSE_LIMIT_S)  # type: ignore[attr-defined]
    close_ms = (time.perf_counter() - started) * 1000

    async def again() -> list[EngineDelta]:
        return [d async for d in engine.stream(prompt, SamplingParams(max_tokens=2, temperature=0.0))]

    try:
        after = await asyncio.wait_for(again(), CLOSE_LIMIT_S * 3)
    except asyncio.TimeoutError:
        raise SelfTestError("a request after the early-closed one did not finish in time") from None
    if not after or after[-1].finish_reason not in ("stop", "length"):
        raise SelfTestError("the request after the early-closed one ended without a finish reason")
    return close_ms


async def run(config: TrtLlmConfig) -> SelfTestReport:
    """Load the engine, run the self-test, close the engine."""
    engine = TrtLlmEngine(config)
    try:
        await engine.load()
        return await self_test(engine)
    finally:
        await engine.close()


def doctor_line(config: TrtLlmConfig) -> tuple[str, bool, str]:
    """`watus doctor`'s row: (what, ok, what to do). Runs the self-test (blocking: the engine loads)."""
    try:
        report = asyncio.run(run(config))
    except asyncio.TimeoutError:
        return ("TensorRT-LLM self-test", False,
                f"closing a request early took over {CLOSE_LIMIT_S:g} s: requests cannot be cancelled "
                "(deploy/jetson/README.md, open questions)")
    except EngineError as e:
        return "TensorRT-LLM self-test", False, str(e)
    except Exception as e:  # a TensorRT-LLM API this code does not know yet: the reason to have the test
        log.debug("TensorRT-LLM self-test failed", exc_info=True)
        return ("TensorRT-LLM self-test", False,
                f"{type(e).__name__}: {e} (this TensorRT-LLM differs from what trt_server/engines/trtllm*.py expect)")
    return f"TensorRT-LLM self-test: {report.summary()}", True, ""


def settings_plan() -> TrtLlmConfig | Skip:
    """`plan` for the LLM server's settings from the environment."""
    try:
        return plan(LLMSettings())
    except ValidationError as e:
        return Skip(f"the WATUS_LLM_* settings do not validate: {e}", problem=True)
