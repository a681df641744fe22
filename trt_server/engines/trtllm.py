"""TensorRT-LLM engine: a prebuilt engine directory (trtllm-build) plus the model's HF tokenizer.

This is the robot's engine (Jetson AGX Orin, INT4 weight-only Llama-3-8B / Qwen2.5-7B). It streams token
ids through the `LLM` API's `generate_async(prompt_ids, sampling_params, streaming=True)`, which runs
TensorRT-LLM's in-flight batching executor, so concurrent requests share every decoding step.

Two TensorRT-LLM lines matter, and their APIs differ:
- 0.12.0-jetson (the Jetson branch): `tensorrt_llm.LLM` loads engines; `SamplingParams.max_tokens`
  defaults to 32 and the seed is `random_seed` in some builds; `RequestOutput` has no `abort()`, the
  in-process executor's C++ `cancel_request(id)` stops a request; no guided decoding.
- 1.x (x86 GPUs): `tensorrt_llm.LLM` is the PyTorch backend, engines load through
  `tensorrt_llm._tensorrt_engine.LLM`; `seed`; `RequestOutput.abort()`; JSON-schema guided decoding
  through xgrammar (`GuidedDecodingParams`).
Both report cumulative `outputs[0].token_ids` (the newest ids are also `token_ids_diff`), so new ids are
found by counting what was already yielded. Keyword arguments are matched to the installed signatures
rather than to a version number, so builds between the two work as well.

Where the `LLM` API cannot be imported, `runtime.ModelRunnerCpp` runs the engine instead: its streaming
`generate()` is a blocking generator, drained in one worker thread (it collects every response of the
executor, so it must run one request at a time) and bridged to asyncio with a queue.

`tensorrt_llm` (and torch with it) is imported only in `load()`; importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from trt_server.engines.base import (
    Capabilities,
    EngineDelta,
    EngineError,
    EngineNotInstalledError,
    ModelNotFoundError,
    SamplingParams,
    Tokenizer,
)
from trt_server.engines.hf_tokenizer import HFTokenizer, has_tokenizer_files
from trt_server.settings import LLMSettings

log = logging.getLogger(__name__)

MANIFEST_FILE = "watus_manifest.json"

INSTALL_HINT = (
    "The trtllm engine needs TensorRT-LLM. On the Jetson (JetPack 6) install the TensorRT-LLM "
    "0.12.0-jetson wheel or build the v0.12.0-jetson branch from source (deploy/jetson/setup.sh does "
    "either); on an x86 NVIDIA GPU: pip install tensorrt-llm --extra-index-url https://pypi.nvidia.com. "
    "Without a GPU use WATUS_LLM_ENGINE=llamacpp."
)


def resolve_engine_dir(settings: LLMSettings) -> Path:
    """The engine directory from WATUS_LLM_MODEL_PATH, checked to hold config.json and an engine file."""
    if settings.model_path is None:
        raise ModelNotFoundError(
            "The trtllm engine needs WATUS_LLM_MODEL_PATH set to a TensorRT-LLM engine directory (built with "
            "trtllm-build, see models/)."
        )
    path = settings.model_path.expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"TensorRT-LLM engine directory not found: {path} (WATUS_LLM_MODEL_PATH). Build one with "
            "trtllm-build (see models/) and point WATUS_LLM_MODEL_PATH at it."
        )
    if not (path / "config.json").is_file() or not any(path.glob("*.engine")):
        raise ModelNotFoundError(
            f"{path} (WATUS_LLM_MODEL_PATH) is not a TensorRT-LLM engine directory: it needs config.json and "
            "rank0.engine as written by trtllm-build."
        )
    return path


def resolve_tokenizer_dir(settings: LLMSettings, engine_dir: Path) -> Path:
    path = (settings.tokenizer_path or engine_dir).expanduser()
    if not has_tokenizer_files(path):
        raise ModelNotFoundError(
            f"No Hugging Face tokenizer in {path}: set WATUS_LLM_TOKENIZER_PATH to the model's HF directory "
            "(tokenizer.json + tokenizer_config.json), or copy those files into the engine directory."
        )
    return path


def read_engine_config(engine_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((engine_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(
            f"Unreadable engine config {engine_dir / 'config.json'} (WATUS_LLM_MODEL_PATH): {e}"
        ) from e
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{engine_dir / 'config.json'} (WATUS_LLM_MODEL_PATH) is no engine config.")
    return config


def engine_limits(config: dict[str, Any], context_length: int) -> tuple[int, int]:
    """(max_context, max_input_len) of the engine, the context capped by WATUS_LLM_CONTEXT_LENGTH."""
    build = config.get("build_config") or {}
    max_input = build.get("max_input_len")
    max_seq = build.get("max_seq_len")
    if not isinstance(max_seq, int) and isinstance(max_input, int):
        # Engines from before max_seq_len (<= 0.9) give the output length separately.
        max_seq = max_input + int(build.get("max_output_len") or 0) or max_input
    max_context = min(context_length, max_seq) if isinstance(max_seq, int) and max_seq > 0 else context_length
    max_input = min(max_input, max_context) if isinstance(max_input, int) and max_input > 0 else max_context
    return max_context, max_input


def read_manifest(engine_dir: Path) -> dict[str, Any] | None:
    """The build manifest the models/ recipes leave with an engine (model, quantisation, flags, versions)."""
    file = engine_dir / MANIFEST_FILE
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", file, e)
        return None
    return data if isinstance(data, dict) else {"value": data}


def _import_tensorrt_llm() -> ModuleType:
    # The robot is often offline: Hub lookups inside TensorRT-LLM must fail fast, not retry.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return importlib.import_module("tensorrt_llm")
    except ImportError as e:
        raise EngineNotInstalledError(f"{INSTALL_HINT} (import tensorrt_llm: {e})") from e


def _import_attr(modules: Iterable[str], name: str) -> Any:
    """The first `module.name` that imports, or None."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


def _accepted(func: Callable[..., Any]) -> set[str] | None:
    """Keyword names `func` takes, or None when it takes any (**kwargs) or has no readable signature."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _only(kwargs: dict[str, Any], accepted: set[str] | None, what: str) -> dict[str, Any]:
    if accepted is None:
        return kwargs
    dropped = sorted(set(kwargs) - accepted)
    if dropped:
        log.debug("%s of this TensorRT-LLM takes no %s; left out", what, ", ".join(dropped))
    return {k: v for k, v in kwargs.items() if k in accepted}


def _finish_reason(reported: object, produced: int, max_tokens: int) -> str:
    if reported in ("stop", "length"):
        return str(reported)
    return "length" if produced >= max_tokens else "stop"


class _RequestIdRecorder:
    """Stands in for `ModelRunnerCpp.executor` to learn the ids it enqueues, so a request can be cancelled."""

    def __init__(self, executor: Any) -> None:
        self._executor = executor
        self.last_ids: list[int] = []

    def enqueue_requests(self, requests: Any) -> Any:
        ids = self._executor.enqueue_requests(requests)
        self.last_ids = [int(i) for i in ids]
        return ids

    def enqueue_request(self, request: Any) -> Any:
        rid = self._executor.enqueue_request(request)
        self.last_ids = [int(rid)]
        return rid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._executor, name)


class TrtLlmEngine:
    """TensorRT-LLM over a prebuilt engine: in-flight batching through the `LLM` API."""

    def __init__(self, settings: LLMSettings) -> None:
        self._settings = settings
        self.engine_dir = resolve_engine_dir(settings)
        self.tokenizer_dir = resolve_tokenizer_dir(settings, self.engine_dir)
        self._config = read_engine_config(self.engine_dir)
        # Checked without importing it (that takes seconds): a CPU box gets the hint at once.
        if importlib.util.find_spec("tensorrt_llm") is None:
            raise EngineNotInstalledError(INSTALL_HINT)
        max_context, self._max_input = engine_limits(self._config, settings.context_length)
        self.model_id = settings.model_name or self.engine_dir.name
        self.capabilities = Capabilities(max_context=max_context, supports_grammar=False, name="trtllm")
        # Set by load(). `tokenizer` is what the server sees; `_tok` keeps the HF-specific ids used here.
        self.tokenizer: Tokenizer = None  # type: ignore[assignment]
        self._tok: HFTokenizer = None  # type: ignore[assignment]
        self._llm: Any = None
        self._runner: Any = None
        self._sampling_cls: Any = None
        self._sampling_fields: set[str] | None = None
        self._guided_cls: Any = None
        self._version = ""
        self._api = ""
        # ModelRunnerCpp only: its generate() reads every response of the executor, one request at a time.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trtllm")

    # -- loading ---------------------------------------------------------------------------------------

    async def load(self) -> None:
        # Imported on the event loop's (main) thread: importing tensorrt_llm initialises MPI, which wants
        # the main thread. It runs once, before the server takes requests.
        trtllm = _import_tensorrt_llm()
        self._version = str(getattr(trtllm, "__version__", ""))
        await asyncio.to_thread(self._load_sync, trtllm)

    def _load_sync(self, trtllm: ModuleType) -> None:
        tok = HFTokenizer(self.tokenizer_dir)
        if tok.eos_token_id is None:
            raise EngineError(f"No EOS token in the tokenizer of {self.tokenizer_dir}: no reply would end.")
        self._tok = self.tokenizer = tok
        log.info("loading TensorRT-LLM %s engine %s (max context %d, KV cache %.0f%% of free GPU memory)",
                 self._version, self.engine_dir, self.capabilities.max_context,
                 self._settings.kv_cache_free_gpu_memory_fraction * 100)
        try:
            # 1.x: the top-level LLM is the PyTorch backend; prebuilt engines load through _tensorrt_engine.
            llm_cls = _import_attr(("tensorrt_llm._tensorrt_engine", "tensorrt_llm"), "LLM")
            sampling_cls = _import_attr(("tensorrt_llm", "tensorrt_llm.llmapi", "tensorrt_llm.hlapi"),
                                        "SamplingParams")
            if llm_cls is not None and sampling_cls is not None:
                self._load_llm_api(llm_cls, sampling_cls)
            else:
                log.warning("TensorRT-LLM %s has no LLM API; running the engine with ModelRunnerCpp "
                            "(one request at a time)", self._version)
                self._load_runner(trtllm)
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"TensorRT-LLM could not load {self.engine_dir}: {e}") from e

    def _load_llm_api(self, llm_cls: Any, sampling_cls: Any) -> None:
        kv_cls = _import_attr(("tensorrt_llm.llmapi", "tensorrt_llm.hlapi", "tensorrt_llm.bindings.executor"),
                              "KvCacheConfig")
        guided_cls = _import_attr(("tensorrt_llm.llmapi", "tensorrt_llm.sampling_params"),
                                  "GuidedDecodingParams")
        guided = (guided_cls is not None and importlib.util.find_spec("xgrammar") is not None
                  and "guided_decoding" in (_accepted(sampling_cls) or {"guided_decoding"}))
        kwargs: dict[str, Any] = {"model": str(self.engine_dir)}
        if kv_cls is not None:
            kwargs["kv_cache_config"] = kv_cls(
                free_gpu_memory_fraction=self._settings.kv_cache_free_gpu_memory_fraction)
        if guided:
            # xgrammar builds its token masks from the tokenizer, so the LLM loads it; it never detokenizes
            # (detokenize=False per request): the server does that once, incrementally.
            kwargs.update(tokenizer=str(self.tokenizer_dir), guided_decoding_backend="xgrammar")
        else:
            # 0.12 would otherwise re-decode the whole output at every streamed step.
            kwargs["skip_tokenizer_init"] = True
        self._llm = llm_cls(**_only(kwargs, _accepted(llm_cls), "LLM()"))
        self._sampling_cls = sampling_cls
        self._sampling_fields = _accepted(sampling_cls)
        self._guided_cls = guided_cls if guided else None
        self._api = "llm"
        self.capabilities = Capabilities(max_context=self.capabilities.max_context, supports_grammar=guided,
                                         name="trtllm")

    def _load_runner(self, trtllm: ModuleType) -> None:
        runner_cls = _import_attr(("tensorrt_llm.runtime",), "ModelRunnerCpp")
        if runner_cls is None:
            raise EngineNotInstalledError(f"{INSTALL_HINT} (this tensorrt_llm has no LLM nor ModelRunnerCpp)")
        rank = getattr(trtllm, "mpi_rank", lambda: 0)()
        kwargs = {"rank": rank,
                  "kv_cache_free_gpu_memory_fraction": self._settings.kv_cache_free_gpu_memory_fraction}
        runner = runner_cls.from_dir(str(self.engine_dir), **_only(kwargs, _accepted(runner_cls.from_dir),
                                                                    "ModelRunnerCpp.from_dir()"))
        if getattr(runner, "executor", None) is not None:
            runner.executor = _RequestIdRecorder(runner.executor)
        self._runner = runner
        self._api = "model_runner_cpp"

    def ready(self) -> bool:
        return self._llm is not None or self._runner is not None

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
            "api": self._api or None,
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

    def _stop_ids(self, params: SamplingParams) -> list[int]:
        """Ids that end a generation besides end_id: the model's other EOS ids (<|eot_id|>), the request's."""
        eos = [] if params.ignore_eos else self._tok.eos_token_ids
        ids = dict.fromkeys([*eos, *params.stop_token_ids])
        if not params.ignore_eos and self._tok.eos_token_id is not None:
            ids.pop(self._tok.eos_token_id, None)  # already end_id
        return list(ids)

    def _pad_id(self) -> int | None:
        pad = self._tok.pad_token_id
        return self._tok.eos_token_id if pad is None else pad

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
        if not self.ready():
            raise EngineError("engine not loaded")
        max_tokens = self._budget(prompt_ids, params)
        ends = set(self._stop_ids(params))
        if not params.ignore_eos and self._tok.eos_token_id is not None:
            ends.add(self._tok.eos_token_id)
        inner = (self._stream_llm(prompt_ids, params, max_tokens) if self._llm is not None
                 else self._stream_runner(prompt_ids, params, max_tokens))
        try:
            async for new_ids, finish in inner:
                # End-of-generation ids are the server's business only as a finish reason, never as text.
                ids = [i for i in new_ids if i not in ends]
                if ids or finish:
                    yield EngineDelta(token_ids=ids, text=None, n_tokens=len(ids), finish_reason=finish)
        finally:
            await inner.aclose()

    def _llm_sampling(self, params: SamplingParams, max_tokens: int) -> Any:
        eos = self._tok.eos_token_id
        fields = self._sampling_fields
        kw: dict[str, Any] = {"end_id": eos, "pad_id": self._pad_id(), "detokenize": False}
        # 0.12 and 1.x default max_tokens to 32: always set it (pre-0.12 called it max_new_tokens).
        old_name = fields is not None and "max_tokens" not in fields
        kw["max_new_tokens" if old_name else "max_tokens"] = max_tokens
        if params.ignore_eos:
            if fields is None or "ignore_eos" in fields:
                kw["ignore_eos"] = True
            else:
                kw["end_id"] = -1  # the executor's "no end id"
        stops = self._stop_ids(params)
        if stops:
            kw["stop_token_ids"] = stops
        kw.update(self._sampling_knobs(params))
        if params.seed is not None:
            kw["seed" if fields is None or "seed" in fields else "random_seed"] = params.seed
        if params.json_schema is not None:
            if self._guided_cls is None:
                raise EngineError("this TensorRT-LLM build has no guided decoding for JSON schemas")
            kw["guided_decoding"] = self._guided_cls(json=params.json_schema)
        return self._sampling_cls(**_only(kw, fields, "SamplingParams"))

    @staticmethod
    def _sampling_knobs(params: SamplingParams) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if params.temperature <= 0.0:
            kw["top_k"] = 1  # greedy; some versions reject temperature 0
        else:
            kw["temperature"] = params.temperature
            # With top_k and top_p both unset the runtime decodes greedily: top_p 1.0 keeps sampling on.
            kw["top_p"] = params.top_p if 0.0 < params.top_p <= 1.0 else 1.0
        if params.presence_penalty:
            kw["presence_penalty"] = params.presence_penalty
        if params.frequency_penalty:
            kw["frequency_penalty"] = params.frequency_penalty
        return kw

    async def _stream_llm(self, prompt_ids: list[int], params: SamplingParams,
                          max_tokens: int) -> AsyncGenerator[tuple[list[int], str | None], None]:
        sampling = self._llm_sampling(params, max_tokens)
        try:
            # Called on the event loop: the result binds its response queue to the running loop.
            result = self._llm.generate_async(list(prompt_ids), sampling, streaming=True)
        except Exception as e:
            raise EngineError(f"TensorRT-LLM rejected the request: {e}") from e
        seen = 0
        finished = False
        responses = result.__aiter__()
        try:
            while not finished:
                try:
                    output = await responses.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as e:
                    raise EngineError(f"TensorRT-LLM failed: {e}") from e
                completion = output.outputs[0]
                ids = list(completion.token_ids or ())
                new = ids[seen:]
                seen = max(seen, len(ids))
                finished = bool(getattr(output, "finished", False))
                yield new, _finish_reason(completion.finish_reason, seen, max_tokens) if finished else None
            if not finished:
                finished = True
                yield [], _finish_reason(None, seen, max_tokens)
        finally:
            if not finished:
                self._abort(result)

    def _abort(self, result: Any) -> None:
        """Stop a request whose consumer went away, with whatever this version offers."""
        rid = getattr(result, "request_id", None)
        executor = getattr(self._llm, "_executor", None)
        try:
            if callable(getattr(result, "abort", None)):  # 1.x
                result.abort()
            elif executor is not None and hasattr(executor, "abort_request"):
                executor.abort_request(rid)
            elif executor is not None and hasattr(getattr(executor, "engine", None), "cancel_request"):
                executor.engine.cancel_request(rid)  # 0.12, in-process executor
            else:
                log.debug("request %s cannot be cancelled in this TensorRT-LLM; it runs to its end", rid)
                return
            log.debug("request %s aborted", rid)
        except Exception as e:  # the request may have just finished
            log.debug("aborting request %s: %s", rid, e)

    # -- ModelRunnerCpp fallback ------------------------------------------------------------------------

    def _runner_kwargs(self, params: SamplingParams, max_tokens: int) -> dict[str, Any]:
        eos = self._tok.eos_token_id
        kw: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "end_id": -1 if params.ignore_eos else eos,
            "pad_id": self._pad_id(),
            # The runner's own SamplingConfig defaults to top_k=1 (greedy): 0 lets top_p alone decide.
            "top_k": 0, "top_p": 1.0, "temperature": 1.0,
        }
        kw.update(self._sampling_knobs(params))
        if params.seed is not None:
            kw["random_seed"] = params.seed
        stops = self._stop_ids(params)
        if stops:
            kw["stop_words_list"] = [[[i] for i in stops]]  # batch -> words -> token ids
        if params.json_schema is not None:
            raise EngineError("ModelRunnerCpp has no guided decoding for JSON schemas")
        return kw

    async def _stream_runner(self, prompt_ids: list[int], params: SamplingParams,
                             max_tokens: int) -> AsyncGenerator[tuple[list[int], str | None], None]:
        kwargs = self._runner_kwargs(params, max_tokens)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[int] | BaseException | None] = asyncio.Queue()
        cancelled = threading.Event()
        started = threading.Event()

        def emit(item: list[int] | BaseException | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            started.set()
            try:
                if not cancelled.is_set():
                    self._drain_runner(prompt_ids, kwargs, cancelled, emit)
            except BaseException as e:  # handed to the consumer, raised there
                emit(e)
            finally:
                emit(None)

        future = loop.run_in_executor(self._pool, run)
        produced = 0
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise EngineError(f"TensorRT-LLM failed: {item}") from item
                produced += len(item)
                yield item, None
            yield [], _finish_reason(None, produced, max_tokens)
        finally:
            cancelled.set()
            # A running request is cancelled at its next step, so waiting is short; one still queued
            # behind another request returns as soon as it starts, so it is not waited for.
            if started.is_set():
                await asyncio.shield(future)

    def _drain_runner(self, prompt_ids: list[int], kwargs: dict[str, Any], cancelled: threading.Event,
                      emit: Callable[[list[int]], None]) -> None:
        """Worker thread: run one streaming generate() to its end, emitting new ids until cancelled."""
        import torch

        runner = self._runner
        n_prompt = len(prompt_ids)
        seen = 0
        cancel_sent = False
        with torch.no_grad():
            outputs = runner.generate([torch.tensor(prompt_ids, dtype=torch.int32)], streaming=True,
                                      return_dict=True, output_sequence_lengths=True, **kwargs)
            # Drained to the end even when cancelled: responses left in the executor would reach the next
            # request's generate(), which reads every response there is.
            for out in outputs:
                if cancelled.is_set():
                    if not cancel_sent:
                        cancel_sent = True
                        self._cancel_runner_request()
                    continue
                length = int(out["sequence_lengths"][0][0])
                if length - n_prompt > seen:
                    new = out["output_ids"][0][0][n_prompt + seen:length].tolist()
                    seen = length - n_prompt
                    emit([int(i) for i in new])

    def _cancel_runner_request(self) -> None:
        recorder = getattr(self._runner, "executor", None)
        if not isinstance(recorder, _RequestIdRecorder) or not hasattr(recorder, "cancel_request"):
            log.debug("ModelRunnerCpp request cannot be cancelled; draining it")
            return
        for rid in recorder.last_ids:
            try:
                recorder.cancel_request(rid)
            except Exception as e:  # it may have just finished
                log.debug("cancelling request %s: %s", rid, e)

    # -- shutdown --------------------------------------------------------------------------------------

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        runner, self._runner = self._runner, None
        if llm is not None:
            await asyncio.to_thread(_shutdown_llm, llm)
        if runner is not None:
            await asyncio.to_thread(_shutdown_runner, runner)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _shutdown_llm(llm: Any) -> None:
    stop = getattr(llm, "shutdown", None) or getattr(llm, "_shutdown", None)  # 1.x / 0.12
    if callable(stop):
        stop()


def _shutdown_runner(runner: Any) -> None:
    executor = getattr(runner, "executor", None)
    if executor is not None and callable(getattr(executor, "shutdown", None)):
        executor.shutdown()
