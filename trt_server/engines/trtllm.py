"""TensorRT-LLM engine: a prebuilt engine directory (trtllm-build) plus the model's HF tokenizer.

This is the robot's engine (Jetson AGX Orin, INT4 weight-only Llama-3-8B / Qwen2.5-7B). It runs the
engine through one of two backends, chosen by what the installed TensorRT-LLM offers:
- the `LLM` API (`trtllm_llmapi`): in-flight batching, concurrent requests share every decoding step;
  0.12.0-jetson (the Jetson branch) and 1.x (x86 GPUs) both have it, with different signatures;
- `runtime.ModelRunnerCpp` (`trtllm_runner`) where the `LLM` API cannot be imported: one request at a
  time in a worker thread.
This module owns what does not depend on the backend: the engine directory and tokenizer
(`trtllm_dir`), the token budget of a request, the finish reason (1.x's where it reports one, derived
from the budget and the end ids otherwise: 0.12 and `ModelRunnerCpp` report none), `info()` for
`/v1/models`. `trtllm_selftest` runs a short generation on the real engine (`watus doctor`).

`tensorrt_llm` (and torch with it) is imported only in `load()`; importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from trt_server.engines.base import (
    Capabilities,
    EngineDelta,
    EngineError,
    EngineNotInstalledError,
    SamplingParams,
    Tokenizer,
)
from trt_server.engines.hf_tokenizer import HFTokenizer
from trt_server.engines.trtllm_common import INSTALL_HINT, Backend, finish_reason, import_tensorrt_llm, stop_ids
from trt_server.engines.trtllm_dir import (
    MANIFEST_FILE,
    engine_limits,
    read_engine_config,
    read_manifest,
    resolve_engine_dir,
    resolve_tokenizer_dir,
    tokens_per_block,
)
from trt_server.engines.trtllm_llmapi import LlmApiBackend
from trt_server.engines.trtllm_runner import RunnerBackend

__all__ = [
    "INSTALL_HINT",
    "MANIFEST_FILE",
    "TrtLlmConfig",
    "TrtLlmEngine",
    "engine_limits",
    "read_manifest",
    "resolve_engine_dir",
    "resolve_tokenizer_dir",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrtLlmConfig:
    """What the trtllm engine takes from the settings (`select_engine` builds it)."""

    #: WATUS_LLM_MODEL_PATH: the engine directory.
    engine_dir: Path | None
    #: WATUS_LLM_CONTEXT_LENGTH: caps the engine's own max_seq_len.
    context_length: int
    #: WATUS_LLM_KV_CACHE_FREE_GPU_MEMORY_FRACTION.
    kv_cache_free_gpu_memory_fraction: float
    #: WATUS_LLM_TOKENIZER_PATH; None: the tokenizer files in the engine directory.
    tokenizer_dir: Path | None = None
    #: WATUS_LLM_MODEL_NAME; None: the engine directory's name.
    model_name: str | None = None


class TrtLlmEngine:
    """TensorRT-LLM over a prebuilt engine: in-flight batching through the `LLM` API where there is one."""

    def __init__(self, config: TrtLlmConfig) -> None:
        self._kv_fraction = config.kv_cache_free_gpu_memory_fraction
        self.engine_dir = resolve_engine_dir(config.engine_dir)
        self.tokenizer_dir = resolve_tokenizer_dir(config.tokenizer_dir, self.engine_dir)
        self._config = read_engine_config(self.engine_dir)
        # Checked without importing it (that takes seconds): a CPU box gets the hint at once.
        if importlib.util.find_spec("tensorrt_llm") is None:
            raise EngineNotInstalledError(INSTALL_HINT)
        max_context, self._max_input = engine_limits(self._config, config.context_length)
        self.model_id = config.model_name or self.engine_dir.name
        self.capabilities = Capabilities(max_context=max_context, supports_grammar=False, name="trtllm")
        # Set by load(). `tokenizer` is what the server sees; `_tok` keeps the HF-specific ids used here.
        self.tokenizer: Tokenizer = None  # type: ignore[assignment]
        self._tok: HFTokenizer = None  # type: ignore[assignment]
        self._backend: Backend | None = None
        self._version = ""

    # -- loading ---------------------------------------------------------------------------------------

    async def load(self) -> None:
        # Imported on the event loop's (main) thread: importing tensorrt_llm initialises MPI, which wants
        # the main thread. It runs once, before the server takes requests.
        trtllm = import_tensorrt_llm()
        self._version = str(getattr(trtllm, "__version__", ""))
        backend = await asyncio.to_thread(self._load_sync, trtllm)
        self._backend = backend
        self.capabilities = Capabilities(max_context=self.capabilities.max_context,
                                         supports_grammar=backend.supports_grammar, name="trtllm")

    def _load_sync(self, trtllm: ModuleType) -> Backend:
        tok = HFTokenizer(self.tokenizer_dir)
        if tok.eos_token_id is None:
            raise EngineError(f"No EOS token in the tokenizer of {self.tokenizer_dir}: no reply would end.")
        self._tok = self.tokenizer = tok
        log.info("loading TensorRT-LLM %s engine %s (max context %d, KV cache %.0f%% of free GPU memory)",
                 self._version, self.engine_dir, self.capabilities.max_context, self._kv_fraction * 100)
        try:
            backend = LlmApiBackend.open(self.engine_dir, self.tokenizer_dir, tok, self._kv_fraction,
                                         tokens_per_block(self._config))
            if backend is not None:
                return backend
            log.warning("TensorRT-LLM %s has no LLM API; running the engine with ModelRunnerCpp "
                        "(one request at a time)", self._version)
            return RunnerBackend.open(trtllm, self.engine_dir, tok, self._kv_fraction)
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"TensorRT-LLM could not load {self.engine_dir}: {e}") from e

    def ready(self) -> bool:
        return self._backend is not None

    @property
    def backend(self) -> Backend | None:
        """The loaded backend (`LLM` API or `ModelRunnerCpp`), None before load()."""
        return self._backend

    def check_grammar(self, schema: dict[str, object]) -> None:
        """xgrammar takes any valid JSON schema; the server has checked validity already."""

    def info(self) -> dict[str, object]:
        build = self._config.get("build_config") or {}
        pretrained = self._config.get("pretrained_config") or {}
        quant = pretrained.get("quantization") or {}
        return {
            "engine": "trtllm",
            "path": str(self.engine_dir),
            "tokenizer_path": str(self.tokenizer_dir),
            "api": self._backend.api if self._backend is not None else None,
            "tensorrt_llm_version": self._version or None,
            "engine_version": self._config.get("version"),
            "architecture": pretrained.get("architecture"),
            "dtype": pretrained.get("dtype"),
            "quantization": quant.get("quant_algo") if isinstance(quant, dict) else None,
            "context_length": self.capabilities.max_context,
            "max_input_len": self._max_input,
            "max_batch_size": build.get("max_batch_size"),
            "supports_grammar": self.capabilities.supports_grammar,
            "manifest": read_manifest(self.engine_dir),
        }

    # -- generation ------------------------------------------------------------------------------------

    def _budget(self, prompt_ids: list[int], params: SamplingParams) -> int:
        if not prompt_ids:
            raise EngineError("empty prompt: TensorRT-LLM needs at least one token")
        if len(prompt_ids) > self._max_input:
            raise EngineError(f"prompt of {len(prompt_ids)} tokens exceeds the engine's max_input_len "
                              f"{self._max_input} (rebuild it with a larger --max_input_len)")
        room = self.capabilities.max_context - len(prompt_ids)
        if room < 1:
            raise EngineError(f"prompt of {len(prompt_ids)} tokens leaves no room in the context of "
                              f"{self.capabilities.max_context}")
        return min(params.max_tokens, room)

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[EngineDelta]:
        backend = self._backend
        if backend is None:
            raise EngineError("engine not loaded")
        max_tokens = self._budget(prompt_ids, params)
        ends = set(stop_ids(self._tok, params))
        if not params.ignore_eos and self._tok.eos_token_id is not None:
            ends.add(self._tok.eos_token_id)
        inner = backend.stream(prompt_ids, params, max_tokens)
        produced, last = 0, None
        cached: int | None = None  # on every delta from the step where the engine first reports it
        try:
            async for step in inner:
                if step.ids:
                    produced += len(step.ids)
                    last = step.ids[-1]
                finish = finish_reason(step.reported, produced, max_tokens, last, ends) if step.done else None
                # End-of-generation ids are the server's business only as a finish reason, never as text.
                ids = [i for i in step.ids if i not in ends]
                if step.cached is not None:
                    cached = step.cached if cached is None else max(cached, step.cached)
                if ids or finish:
                    yield EngineDelta(token_ids=ids, text=None, n_tokens=len(ids), finish_reason=finish,
                                      cached_tokens=cached)
                if finish:
                    return
            # A backend that ended without a last step: the reason is derived all the same.
            yield EngineDelta(finish_reason=finish_reason(None, produced, max_tokens, last, ends))
        finally:
            await inner.aclose()

    # -- shutdown --------------------------------------------------------------------------------------

    async def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.close()

