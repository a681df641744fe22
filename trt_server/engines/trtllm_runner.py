"""The `ModelRunnerCpp` path, for a TensorRT-LLM whose `LLM` API cannot be imported.

`runtime.ModelRunnerCpp.generate(..., streaming=True)` is a blocking generator that reads every response
of the executor, so it runs one request at a time, drained in a single worker thread and bridged to
asyncio with a queue. The runner keeps its `bindings.executor.Executor` as `runner.session` in
0.12.0-jetson (`model_runner_cpp.py`: `self.session.enqueue_requests(...)`, `await_responses()`) and as
`runner.executor` in later versions. Whichever it is, this module stands in for it to learn the ids it
enqueues, cancels a request closed early through it (`cancel_request(id)`), and shuts it down on close.
The runner reports no finish reason; the engine derives it (`trtllm_common.finish_reason`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from trt_server.engines.base import EngineError, EngineNotInstalledError, SamplingParams
from trt_server.engines.hf_tokenizer import HFTokenizer
from trt_server.engines.trtllm_common import (
    INSTALL_HINT,
    IdStream,
    Step,
    accepted,
    import_attr,
    only,
    pad_id,
    sampling_knobs,
    stop_ids,
)

log = logging.getLogger(__name__)

#: Where `ModelRunnerCpp` keeps its executor: `session` (0.12.0-jetson), `executor` (later versions).
EXECUTOR_ATTRS = ("session", "executor")


def executor_attr(runner: Any) -> str | None:
    """The attribute of `runner` that holds its executor (the one with `enqueue_requests`), or None."""
    for name in EXECUTOR_ATTRS:
        if callable(getattr(getattr(runner, name, None), "enqueue_requests", None)):
            return name
    return None


class _RequestIdRecorder:
    """Stands in for the runner's executor to learn the ids it enqueues, so a request can be cancelled."""

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


class RunnerBackend:
    """A loaded `ModelRunnerCpp`, one request at a time."""

    api = "model_runner_cpp"
    supports_grammar = False

    def __init__(self, runner: Any, tok: HFTokenizer, executor_attr: str | None) -> None:
        self.runner = runner
        self._tok = tok
        #: `session` or `executor`: where the runner's (wrapped) executor is; None where it has none.
        self.executor_attr = executor_attr
        self.last_cancel = ""
        # generate() reads every response of the executor: one request at a time.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trtllm")

    @classmethod
    def open(cls, trtllm: ModuleType, engine_dir: Path, tok: HFTokenizer, kv_cache_fraction: float) -> RunnerBackend:
        """Load the engine with `ModelRunnerCpp.from_dir` (blocking, seconds)."""
        runner_cls = import_attr(("tensorrt_llm.runtime",), "ModelRunnerCpp")
        if runner_cls is None:
            raise EngineNotInstalledError(f"{INSTALL_HINT} (this tensorrt_llm has no LLM nor ModelRunnerCpp)")
        rank = getattr(trtllm, "mpi_rank", lambda: 0)()
        # Block reuse is the prefix cache (off by default in ModelRunnerCpp): the agent's turns share their
        # prompt up to the question, and it prefills that prefix while the person speaks.
        kwargs = {"rank": rank, "kv_cache_free_gpu_memory_fraction": kv_cache_fraction,
                  "kv_cache_enable_block_reuse": True}
        runner = runner_cls.from_dir(str(engine_dir), **only(kwargs, accepted(runner_cls.from_dir),
                                                              "ModelRunnerCpp.from_dir()"))
        attr = executor_attr(runner)
        if attr is None:
            log.warning("this ModelRunnerCpp keeps no executor as %s: a request closed early runs to its end",
                        " or ".join(EXECUTOR_ATTRS))
        else:
            setattr(runner, attr, _RequestIdRecorder(getattr(runner, attr)))
        return cls(runner, tok, attr)

    def _executor(self) -> Any:
        """The runner's executor (wrapped by open()), or None."""
        return getattr(self.runner, self.executor_attr, None) if self.executor_attr else None

    def generate_kwargs(self, params: SamplingParams, max_tokens: int) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "end_id": -1 if params.ignore_eos else self._tok.eos_token_id,
            "pad_id": pad_id(self._tok),
            # The runner's own SamplingConfig defaults to top_k=1 (greedy): 0 lets top_p alone decide.
            "top_k": 0, "top_p": 1.0, "temperature": 1.0,
        }
        kw.update(sampling_knobs(params))
        if params.seed is not None:
            kw["random_seed"] = params.seed
        stops = stop_ids(self._tok, params)
        if stops:
            kw["stop_words_list"] = [[[i] for i in stops]]  # batch -> words -> token ids
        if params.json_schema is not None:
            raise EngineError("ModelRunnerCpp has no guided decoding for JSON schemas")
        return kw

    async def stream(self, prompt_ids: list[int], params: SamplingParams, max_tokens: int) -> IdStream:
        kwargs = self.generate_kwargs(params, max_tokens)
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
                    self._drain(prompt_ids, kwargs, cancelled, emit)
            except BaseException as e:  # handed to the consumer, raised there
                if cancelled.is_set():  # nobody reads it any more
                    log.debug("ModelRunnerCpp request failed after it was cancelled", exc_info=True)
                emit(e)
            finally:
                emit(None)

        future = loop.run_in_executor(self._pool, run)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise EngineError(f"TensorRT-LLM failed: {item}") from item
                yield Step(item)
            yield Step(done=True)
        finally:
            cancelled.set()
            # A running request is cancelled at its next step, so waiting is short; one still queued
            # behind another request returns as soon as it starts, so it is not waited for.
            if started.is_set():
                await asyncio.shield(future)

    def _drain(self, prompt_ids: list[int], kwargs: dict[str, Any], cancelled: threading.Event,
               emit: Callable[[list[int]], None]) -> None:
        """Worker thread: run one streaming generate() to its end, emitting new ids until cancelled."""
        import torch

        n_prompt = len(prompt_ids)
        seen = 0
        cancel_sent = False
        with torch.no_grad():
            outputs = self.runner.generate([torch.tensor(prompt_ids, dtype=torch.int32)], streaming=True,
                                           return_dict=True, output_sequence_lengths=True, **kwargs)
            # Drained to the end even when cancelled: responses left in the executor would reach the next
            # request's generate(), which reads every response there is.
            for out in outputs:
                if cancelled.is_set():
                    if not cancel_sent:
                        cancel_sent = True
                        self._cancel_request()
                    continue
                length = int(out["sequence_lengths"][0][0])
                if length - n_prompt > seen:
                    new = out["output_ids"][0][0][n_prompt + seen:length].tolist()
                    seen = length - n_prompt
                    emit([int(i) for i in new])

    def _cancel_request(self) -> None:
        recorder = self._executor()
        if not isinstance(recorder, _RequestIdRecorder) or not hasattr(recorder, "cancel_request"):
            self.last_cancel = "none: this ModelRunnerCpp has no executor to cancel through; it runs to its end"
            log.debug("ModelRunnerCpp request cannot be cancelled; draining it")
            return
        self.last_cancel = f"ModelRunnerCpp.{self.executor_attr}.cancel_request()"
        for rid in recorder.last_ids:
            try:
                recorder.cancel_request(rid)
            except Exception:  # it may have just finished
                log.debug("cancelling request %s failed", rid, exc_info=True)

    async def close(self) -> None:
        await asyncio.to_thread(self._shutdown)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _shutdown(self) -> None:
        executor = self._executor()
        if executor is not None and callable(getattr(executor, "shutdown", None)):
            executor.shutdown()
