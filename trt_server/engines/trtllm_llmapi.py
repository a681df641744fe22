"""The TensorRT-LLM `LLM` API path: in-flight batching through `generate_async(..., streaming=True)`.

TensorRT-LLM's executor runs every request of the `LLM` object in one batch, so concurrent requests
share each decoding step. The two lines the robot meets differ (keyword names are taken from the
installed signatures, never from a version number):
- 0.12.0-jetson: `tensorrt_llm.LLM` loads engines. `SamplingParams` takes `max_new_tokens` (default 32),
  `random_seed` and `stop_token_ids`. `CompletionOutput` is a `@dataclass(slots=True)` of `index, text,
  token_ids, cumulative_logprob, logprobs, generation_logits` with a `text_diff` property: no
  `finish_reason`, `stop_reason` or `token_ids_diff` (those came with 0.14). `RequestOutput` has no
  `abort()`: a request is cancelled through the executor where the build exposes a way
  (`_executor.abort_request`, or the in-process worker's C++ `engine.cancel_request(id)`); which one the
  Orin's build takes is an open question of deploy/jetson/README.md. No guided decoding.
- 1.x: `tensorrt_llm.LLM` is the PyTorch backend, engines load through `tensorrt_llm._tensorrt_engine.LLM`;
  `SamplingParams` takes `max_tokens` and `seed`; `CompletionOutput` adds `finish_reason`, `stop_reason`
  and `token_ids_diff`; `RequestOutput.abort()`; JSON-schema guided decoding through xgrammar
  (`GuidedDecodingParams`).
Both keep a cumulative `outputs[0].token_ids`, so a step's new ids are the ones past those already
yielded. That is what 1.x's `token_ids_diff` holds too, but only when each step is read exactly once;
the difference of the cumulative list does not depend on that, and 0.12 has nothing else. The finish
reason is 1.x's where it reports one; the engine derives it otherwise (`trtllm_common.finish_reason`).

Cached prompt tokens (the usage's `prompt_tokens_details.cached_tokens`): 1.x's `SamplingParams` takes
`return_perf_metrics`, and then each `CompletionOutput.request_perf_metrics.kv_cache_metrics` counts the
request's `num_reused_blocks`; times the engine's `tokens_per_block` (its `config.json`), at most the
prompt less its last token, which the executor always computes again. Where a build reports none, the
result's own `cached_tokens` (the PyTorch path's, 1.x) is taken if it is above 0; 0.12 reports nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from pathlib import Path
from typing import Any

from trt_server.engines.base import EngineError, SamplingParams
from trt_server.engines.hf_tokenizer import HFTokenizer
from trt_server.engines.trtllm_common import (
    IdStream,
    Step,
    accepted,
    import_attr,
    only,
    pad_id,
    reported_finish,
    sampling_knobs,
    stop_ids,
)

log = logging.getLogger(__name__)


class LlmApiBackend:
    """A loaded `LLM` object and the sampling classes of the same TensorRT-LLM."""

    api = "llm"

    def __init__(self, llm: Any, tok: HFTokenizer, sampling_cls: Any, guided_cls: Any | None,
                 tokens_per_block: int | None = None) -> None:
        self.llm = llm
        self.tokens_per_block = tokens_per_block
        self._tok = tok
        self._sampling_cls = sampling_cls
        self._sampling_fields = accepted(sampling_cls)
        self._guided_cls = guided_cls
        self.supports_grammar = guided_cls is not None
        self.last_cancel = ""

    @classmethod
    def open(cls, engine_dir: Path, tokenizer_dir: Path, tok: HFTokenizer, kv_cache_fraction: float,
             tokens_per_block: int | None = None) -> LlmApiBackend | None:
        """Load the engine through the `LLM` API (blocking, seconds); None when this version has none."""
        # 1.x: the top-level LLM is the PyTorch backend; prebuilt engines load through _tensorrt_engine.
        llm_cls = import_attr(("tensorrt_llm._tensorrt_engine", "tensorrt_llm"), "LLM")
        sampling_cls = import_attr(("tensorrt_llm", "tensorrt_llm.llmapi", "tensorrt_llm.hlapi"), "SamplingParams")
        if llm_cls is None or sampling_cls is None:
            return None
        kv_cls = import_attr(("tensorrt_llm.llmapi", "tensorrt_llm.hlapi", "tensorrt_llm.bindings.executor"),
                             "KvCacheConfig")
        guided_cls = import_attr(("tensorrt_llm.llmapi", "tensorrt_llm.sampling_params"), "GuidedDecodingParams")
        guided = (guided_cls is not None and importlib.util.find_spec("xgrammar") is not None
                  and "guided_decoding" in (accepted(sampling_cls) or {"guided_decoding"}))
        kwargs: dict[str, Any] = {"model": str(engine_dir)}
        if kv_cls is not None:
            # Block reuse is the prefix cache: on by default in 1.x, off in 0.12's executor config.
            kv = {"free_gpu_memory_fraction": kv_cache_fraction, "enable_block_reuse": True}
            kwargs["kv_cache_config"] = kv_cls(**only(kv, accepted(kv_cls), "KvCacheConfig()"))
        if guided:
            # xgrammar builds its token masks from the tokenizer, so the LLM loads it; it never detokenizes
            # (detokenize=False per request): the server does that once, incrementally.
            kwargs.update(tokenizer=str(tokenizer_dir), guided_decoding_backend="xgrammar")
        else:
            # 0.12 would otherwise re-decode the whole output at every streamed step.
            kwargs["skip_tokenizer_init"] = True
        llm = llm_cls(**only(kwargs, accepted(llm_cls), "LLM()"))
        return cls(llm, tok, sampling_cls, guided_cls if guided else None, tokens_per_block)

    def sampling(self, params: SamplingParams, max_tokens: int) -> Any:
        """The installed `SamplingParams` for a request, under the names this version takes."""
        fields = self._sampling_fields
        kw: dict[str, Any] = {"end_id": self._tok.eos_token_id, "pad_id": pad_id(self._tok), "detokenize": False}
        # 0.12 calls it max_new_tokens, 1.x max_tokens; both default to 32, so it is always set.
        old_name = fields is not None and "max_tokens" not in fields
        kw["max_new_tokens" if old_name else "max_tokens"] = max_tokens
        if params.ignore_eos:
            if fields is None or "ignore_eos" in fields:
                kw["ignore_eos"] = True
            else:
                kw["end_id"] = -1  # the executor's "no end id"
        stops = stop_ids(self._tok, params)
        if stops:
            kw["stop_token_ids"] = stops
        kw.update(sampling_knobs(params))
        if params.seed is not None:
            kw["seed" if fields is None or "seed" in fields else "random_seed"] = params.seed
        if fields is not None and "return_perf_metrics" in fields:
            kw["return_perf_metrics"] = True  # the reused KV-cache blocks: the prompt's cached tokens
        if params.json_schema is not None:
            if self._guided_cls is None:
                raise EngineError("this TensorRT-LLM build has no guided decoding for JSON schemas")
            kw["guided_decoding"] = self._guided_cls(json=params.json_schema)
        return self._sampling_cls(**only(kw, fields, "SamplingParams"))

    async def stream(self, prompt_ids: list[int], params: SamplingParams, max_tokens: int) -> IdStream:
        sampling = self.sampling(params, max_tokens)
        try:
            # Called on the event loop: the result binds its response queue to the running loop.
            result = self.llm.generate_async(list(prompt_ids), sampling, streaming=True)
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
                ids = list(completion.token_ids or ())  # cumulative in 0.12 and 1.x
                new = ids[seen:]
                seen = max(seen, len(ids))
                finished = bool(getattr(output, "finished", False))
                yield Step(new, done=finished, reported=reported_finish(completion) if finished else None,
                           cached=self.cached_tokens(output, completion, len(prompt_ids)))
            if not finished:
                finished = True
                yield Step(done=True)
        finally:
            if not finished:
                self._abort(result)

    def cached_tokens(self, output: Any, completion: Any, prompt_len: int) -> int | None:
        """The prompt tokens this request took from the KV cache, as far as this version reports them."""
        kv = getattr(getattr(completion, "request_perf_metrics", None), "kv_cache_metrics", None)
        reused = getattr(kv, "num_reused_blocks", None)
        if isinstance(reused, int) and self.tokens_per_block:
            return max(0, min(reused * self.tokens_per_block, prompt_len - 1))
        cached = getattr(output, "cached_tokens", None)
        return min(cached, prompt_len) if isinstance(cached, int) and cached > 0 else None

    def _abort(self, result: Any) -> None:
        """Stop a request whose consumer went away, with whatever this version offers."""
        rid = getattr(result, "request_id", None)
        executor = getattr(self.llm, "_executor", None)
        try:
            if callable(getattr(result, "abort", None)):  # 1.x
                self.last_cancel = "RequestOutput.abort()"
                result.abort()
            elif executor is not None and hasattr(executor, "abort_request"):
                self.last_cancel = "LLM._executor.abort_request()"
                executor.abort_request(rid)
            elif executor is not None and hasattr(getattr(executor, "engine", None), "cancel_request"):
                self.last_cancel = "LLM._executor.engine.cancel_request()"  # 0.12, in-process executor
                executor.engine.cancel_request(rid)
            else:
                self.last_cancel = "none: this TensorRT-LLM offers no way, the request runs to its end"
                log.debug("request %s cannot be cancelled in this TensorRT-LLM; it runs to its end", rid)
                return
            log.debug("request %s aborted through %s", rid, self.last_cancel)
        except Exception:  # the request may have just finished
            log.debug("aborting request %s failed", rid, exc_info=True)

    async def close(self) -> None:
        await asyncio.to_thread(_shutdown, self.llm)


def _shutdown(llm: Any) -> None:
    stop = getattr(llm, "shutdown", None) or getattr(llm, "_shutdown", None)  # 1.x / 0.12
    if callable(stop):
        stop()
