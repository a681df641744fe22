"""The trtllm engine against stand-ins shaped like each TensorRT-LLM version it supports.

This machine has no GPU, so TensorRT-LLM's objects are stood in for, each with the shape its version
really has (fields, slots, attribute and keyword names, what is returned), as read in the sources of
the v0.12.0-jetson branch and of 1.x:
- 0.12.0-jetson, `LLM` API: `SamplingParams(max_new_tokens=, random_seed=, stop_token_ids=)`;
  `CompletionOutput` is a `@dataclass(slots=True)` of index, text, token_ids, cumulative_logprob, logprobs
  and generation_logits with only `text_diff`, so reading `finish_reason` raises AttributeError as it does
  on the robot; `RequestOutput` has no `abort()`, the in-process executor's C++ `cancel_request(id)`
  stops a request; `LLM._shutdown()`.
- 1.x, `_tensorrt_engine.LLM`: `SamplingParams(max_tokens=, seed=, ignore_eos=, detokenize=,
  guided_decoding=)`; `CompletionOutput` adds finish_reason, stop_reason and token_ids_diff;
  `RequestOutput.abort()`; `LLM.shutdown()`.
- `ModelRunnerCpp`: the executor is `runner.session` in 0.12.0-jetson and `runner.executor` later;
  `generate(streaming=True)` enqueues at once and returns a generator of the cumulative `output_ids` and
  `sequence_lengths`, which ends with the final responses (a cancelled request's comes next).
In every version the executor returns stop-word tokens but not the end id, and keeps `token_ids`
cumulative. One test per version path: streaming, finish reason, cancellation, shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.machinery
import json
import sys
import time
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.test_trtllm_engine import BOS, EOS, EOT, PAD, config_for, write_engine_dir
from trt_server.engines import trtllm
from trt_server.engines.base import EngineDelta, EngineError, SamplingParams
from trt_server.engines.trtllm_common import finish_reason, reported_finish
from trt_server.engines.trtllm_llmapi import LlmApiBackend
from trt_server.engines.trtllm_runner import RunnerBackend

pytest.importorskip("tokenizers", reason="the engine loads the tiny tokenizer with `tokenizers`")


# -- the executor's behaviour, shared by every stand-in ---------------------------------------------------

class Sequence:
    """One request in the executor: the script's next token per step. The end id ends it and is not
    returned; a stop token ends it and is returned; so do the token budget and the engine's max_seq_len."""

    def __init__(self, script: list[int], *, end_id: int | None, stops: list[int] | None, max_new: int,
                 room: int | None = None) -> None:
        self._script = list(script)
        self._end = end_id
        self._stops = set(stops or ())
        self._max = max_new
        self._room = room  # tokens left in the engine's max_seq_len
        self.produced: list[int] = []

    def step(self) -> tuple[list[int], str | None, int | None]:
        """(new tokens, finish reason or None, the stop token that matched or None)."""
        token = self._script.pop(0) if self._script else 9
        if token == self._end:
            return [], "stop", None
        self.produced.append(token)
        if token in self._stops:
            return [token], "stop", token
        if len(self.produced) >= self._max:
            return [token], "length", None
        if self._room is not None and len(self.produced) >= self._room:
            return [token], "length", None  # max_seq_len reached before max_tokens
        return [token], None, None


# -- 0.12.0-jetson: the LLM API ---------------------------------------------------------------------------

@dataclasses.dataclass(slots=True, kw_only=True)
class SamplingParams012:
    end_id: int | None = None
    pad_id: int | None = None
    max_new_tokens: int = 32
    stop_token_ids: list[int] | None = None
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    random_seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclasses.dataclass(slots=True)
class CompletionOutput012:
    index: int
    text: str = ""
    token_ids: list[int] = dataclasses.field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[float] = dataclasses.field(default_factory=list)
    generation_logits: Any = None
    _last_text_len: int = dataclasses.field(default=0, init=False, repr=False)

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text_len:]


class RequestOutput012:
    """0.12's result in streaming mode: one executor response per iteration, `finished`, no `abort()`."""

    def __init__(self, request_id: int, seq: Sequence) -> None:
        self.request_id = request_id
        self._outputs = [CompletionOutput012(0)]
        self._done = False
        self._seq = seq

    @property
    def outputs(self) -> list[Any]:
        return self._outputs

    @property
    def finished(self) -> bool:
        return self._done

    def __aiter__(self) -> RequestOutput012:
        return self

    async def __anext__(self) -> RequestOutput012:
        if self._done:
            raise StopAsyncIteration
        await asyncio.sleep(0)
        new, finish, _ = self._seq.step()
        self._outputs[0].token_ids.extend(new)
        self._done = finish is not None
        return self


class CppExecutor012:
    """The in-process worker's C++ `tllm.Executor` handle (`LLM._executor.engine`)."""

    def __init__(self) -> None:
        self.cancelled: list[int] = []

    def cancel_request(self, request_id: int) -> None:
        self.cancelled.append(request_id)


class LLM012:
    """`tensorrt_llm.LLM` of 0.12.0-jetson, loading an engine directory."""

    script: ClassVar[list[int]] = []
    room: ClassVar[int | None] = None

    def __init__(self, model: str, tokenizer: str | None = None, skip_tokenizer_init: bool = False,
                 **kwargs: Any) -> None:
        self.kwargs = {"model": model, "tokenizer": tokenizer, "skip_tokenizer_init": skip_tokenizer_init, **kwargs}
        self.requests: list[tuple[list[int], Any]] = []
        self.results: list[Any] = []
        self.shut = False
        self._executor = types.SimpleNamespace(engine=CppExecutor012())

    def _sequence(self, sampling: Any, max_new: int) -> Sequence:
        return Sequence(self.script, end_id=sampling.end_id, stops=sampling.stop_token_ids, max_new=max_new,
                        room=self.room)

    def generate_async(self, prompt: list[int], sampling_params: Any, streaming: bool = False) -> Any:
        assert streaming
        result = RequestOutput012(100 + len(self.results), self._sequence(sampling_params,
                                                                          sampling_params.max_new_tokens))
        self.requests.append((prompt, sampling_params))
        self.results.append(result)
        return result

    def _shutdown(self) -> None:
        self.shut = True


# -- 1.x: the LLM API on prebuilt engines -------------------------------------------------------------------

@dataclasses.dataclass(slots=True, kw_only=True)
class SamplingParams1x:
    end_id: int | None = None
    pad_id: int | None = None
    max_tokens: int = 32
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    detokenize: bool = True
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    guided_decoding: Any = None
    return_perf_metrics: bool = False


@dataclasses.dataclass(kw_only=True)
class GuidedDecodingParams:
    json: Any = None


@dataclasses.dataclass(kw_only=True)
class KvCacheConfig:
    free_gpu_memory_fraction: float | None = None
    enable_block_reuse: bool = False


@dataclasses.dataclass(slots=True)
class CompletionOutput1x:
    index: int
    text: str = ""
    token_ids: list[int] = dataclasses.field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[float] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    generation_logits: Any = None
    request_perf_metrics: Any = None  # a RequestPerfMetrics where return_perf_metrics was asked for
    _last_text_len: int = dataclasses.field(default=0, init=False, repr=False)
    _last_token_ids_len: int = dataclasses.field(default=0, init=False, repr=False)

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text_len:]

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len:]


class RequestOutput1x:
    """1.x's result: the diff base moves at each response, the last carries finish/stop reason; `abort()`."""

    def __init__(self, request_id: int, seq: Sequence, llm: LLM1x) -> None:
        self.request_id = request_id
        self.outputs = [CompletionOutput1x(0)]
        self.finished = False
        self._seq = seq
        self._llm = llm

    def __aiter__(self) -> RequestOutput1x:
        return self

    async def __anext__(self) -> RequestOutput1x:
        if self.finished:
            raise StopAsyncIteration
        await asyncio.sleep(0)
        out = self.outputs[0]
        new, finish, stop = self._seq.step()
        out._last_token_ids_len = len(out.token_ids)
        out.token_ids.extend(new)
        if finish is not None:
            self.finished = True
            out.finish_reason, out.stop_reason = finish, stop
        return self

    def abort(self) -> None:
        self._llm._executor.abort_request(self.request_id)


class LLM1x(LLM012):
    """`tensorrt_llm._tensorrt_engine.LLM` of 1.x."""

    def __init__(self, model: str, tokenizer: str | None = None, skip_tokenizer_init: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(model, tokenizer, skip_tokenizer_init, **kwargs)
        self.aborted: list[int] = []
        self._executor = types.SimpleNamespace(abort_request=self.aborted.append)
        build = json.loads((Path(model) / "config.json").read_text())["build_config"]
        self.tokens_per_block = (build.get("plugin_config") or {}).get("tokens_per_block", 64)

    def reused_blocks(self, prompt: list[int]) -> int:
        """The executor's block reuse: whole blocks of the longest prefix shared with an earlier prompt, its
        last token left out (always computed again); none without `enable_block_reuse`."""
        kv = self.kwargs.get("kv_cache_config")
        if kv is None or not kv.enable_block_reuse:
            return 0
        shared = 0
        for earlier, _ in self.requests:
            n = 0
            while n < min(len(earlier), len(prompt) - 1) and earlier[n] == prompt[n]:
                n += 1
            shared = max(shared, n)
        return int(shared // self.tokens_per_block)

    def generate_async(self, prompt: list[int], sampling_params: Any, streaming: bool = False) -> Any:
        assert streaming
        seq = self._sequence(sampling_params, sampling_params.max_tokens)
        if sampling_params.ignore_eos:
            seq = Sequence(self.script, end_id=None, stops=sampling_params.stop_token_ids,
                           max_new=sampling_params.max_tokens, room=self.room)
        result = RequestOutput1x(100 + len(self.results), seq, self)
        if sampling_params.return_perf_metrics:
            kv = types.SimpleNamespace(num_reused_blocks=self.reused_blocks(prompt), num_missed_blocks=0)
            result.outputs[0].request_perf_metrics = types.SimpleNamespace(kv_cache_metrics=kv)
        self.requests.append((prompt, sampling_params))
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.shut = True


# -- ModelRunnerCpp: `session` (0.12.0-jetson) or `executor` (later) -----------------------------------------

class FakeRow(list[int]):
    """A row of a torch tensor: slices stay rows, `tolist()`."""

    def tolist(self) -> list[int]:
        return list(self)

    def __getitem__(self, item: Any) -> Any:
        value = super().__getitem__(item)
        return FakeRow(value) if isinstance(item, slice) else value


class RunnerExecutor:
    """`bindings.executor.Executor` as ModelRunnerCpp drives it."""

    def __init__(self) -> None:
        self.cancelled: list[int] = []
        self.shut = False
        self._next = 7

    def enqueue_requests(self, requests: list[Any]) -> list[int]:
        ids = list(range(self._next, self._next + len(requests)))
        self._next += len(requests)
        return ids

    def cancel_request(self, request_id: int) -> None:
        self.cancelled.append(request_id)

    def shutdown(self) -> None:
        self.shut = True


class Runner012:
    """0.12.0-jetson's `ModelRunnerCpp`: its executor is `self.session`."""

    EXECUTOR = "session"
    script: ClassVar[list[int]] = []

    def __init__(self, executor: Any) -> None:
        setattr(self, self.EXECUTOR, executor)
        self.calls: list[dict[str, Any]] = []
        self.steps = 0

    @property
    def _exec(self) -> Any:
        return getattr(self, self.EXECUTOR)

    @classmethod
    def from_dir(cls, engine_dir: str, *, lora_dir: str | None = None, rank: int = 0,
                 max_batch_size: int | None = None, kv_cache_free_gpu_memory_fraction: float | None = None,
                 debug_mode: bool = False, kv_cache_enable_block_reuse: bool = False) -> Any:
        runner = cls(RunnerExecutor())
        runner.calls.append({"engine_dir": engine_dir, "rank": rank, "fraction": kv_cache_free_gpu_memory_fraction,
                             "block_reuse": kv_cache_enable_block_reuse})
        return runner

    def generate(self, batch_input_ids: list[list[int]], *, max_new_tokens: int, end_id: int, pad_id: int,
                 stop_words_list: list[list[list[int]]] | None = None, streaming: bool = False,
                 return_dict: bool = False, output_sequence_lengths: bool = False, **sampling: Any) -> Any:
        self.calls.append({"max_new_tokens": max_new_tokens, "end_id": end_id, "pad_id": pad_id,
                           "stop_words_list": stop_words_list, "streaming": streaming, **sampling})
        assert streaming and return_dict and output_sequence_lengths
        (rid,) = self._exec.enqueue_requests([batch_input_ids[0]])  # at once, as the real generate()
        stops = [w[0] for w in stop_words_list[0]] if stop_words_list else None
        seq = Sequence(self.script, end_id=end_id, stops=stops, max_new=max_new_tokens)
        return self._stream(rid, list(batch_input_ids[0]), seq, end_id)

    def _stream(self, rid: int, prompt: list[int], seq: Sequence, end_id: int) -> Iterator[dict[str, Any]]:
        out = list(prompt)
        while True:
            time.sleep(0.002)  # await_responses(): one decoding step
            self.steps += 1
            if rid in self._exec.cancelled:
                finish: str | None = "cancelled"
                new: list[int] = []
            else:
                new, finish, _ = seq.step()
            out += new
            yield {"output_ids": [[FakeRow(out + [end_id] * 4)]], "sequence_lengths": [[len(out)]]}
            if finish is not None:
                return


class Runner1x(Runner012):
    """A later `ModelRunnerCpp`: its executor is `self.executor`."""

    EXECUTOR = "executor"


# -- installing a stand-in tensorrt_llm ------------------------------------------------------------------------

def module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mod.__dict__.update(attrs)
    return mod


def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        monkeypatch.delitem(sys.modules, name)


def install_fake(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """A stand-in tensorrt_llm in sys.modules: "0.12" or "1.x" (LLM API), "0.12-runner" or "1.x-runner"."""
    _clear(monkeypatch)
    if version == "0.12":
        modules = {"tensorrt_llm": module("tensorrt_llm", __version__="0.12.0", LLM=LLM012,
                                          SamplingParams=SamplingParams012),
                   "tensorrt_llm.hlapi": module("tensorrt_llm.hlapi", KvCacheConfig=KvCacheConfig)}
    elif version == "1.x":
        modules = {"tensorrt_llm": module("tensorrt_llm", __version__="1.0.0", LLM=object,
                                          SamplingParams=SamplingParams1x),
                   "tensorrt_llm._tensorrt_engine": module("tensorrt_llm._tensorrt_engine", LLM=LLM1x),
                   "tensorrt_llm.llmapi": module("tensorrt_llm.llmapi", KvCacheConfig=KvCacheConfig,
                                                 GuidedDecodingParams=GuidedDecodingParams),
                   "xgrammar": module("xgrammar")}
    else:  # a build whose LLM API does not import: the runner fallback
        runner = Runner012 if version == "0.12-runner" else Runner1x
        torch = module("torch", int32="int32", tensor=lambda ids, dtype=None: list(ids),
                       no_grad=contextlib.nullcontext)
        modules = {"torch": torch,
                   "tensorrt_llm": module("tensorrt_llm", __version__="0.12.0" if runner is Runner012 else "1.0.0",
                                          mpi_rank=lambda: 0),
                   "tensorrt_llm.runtime": module("tensorrt_llm.runtime", ModelRunnerCpp=runner)}
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)


def set_script(monkeypatch: pytest.MonkeyPatch, script: list[int]) -> None:
    """The tokens every stand-in generates next (each request starts the script again)."""
    for cls in (LLM012, Runner012):
        monkeypatch.setattr(cls, "script", script)


async def loaded(engine_dir: Path, monkeypatch: pytest.MonkeyPatch, version: str, script: list[int],
                 kv_fraction: float = 0.3) -> trtllm.TrtLlmEngine:
    install_fake(monkeypatch, version)
    set_script(monkeypatch, script)
    engine = trtllm.TrtLlmEngine(config_for(engine_dir, context_length=128,
                                            kv_cache_free_gpu_memory_fraction=kv_fraction))
    await engine.load()
    assert engine.ready()
    return engine


def llm_of(engine: trtllm.TrtLlmEngine) -> Any:
    backend = engine.backend
    assert isinstance(backend, LlmApiBackend)
    return backend.llm


def runner_of(engine: trtllm.TrtLlmEngine) -> Any:
    backend = engine.backend
    assert isinstance(backend, RunnerBackend)
    return backend.runner


async def collect(stream: AsyncIterator[EngineDelta]) -> list[EngineDelta]:
    return [d async for d in stream]


def ids_of(deltas: list[EngineDelta]) -> list[int]:
    return [i for d in deltas for i in d.token_ids]


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    path = write_engine_dir(tmp_path / "engine")
    (path / trtllm.MANIFEST_FILE).write_text(json.dumps({"model": "tiny", "quantization": "int4_awq"}))
    return path


async def close_after_first(engine: trtllm.TrtLlmEngine, params: SamplingParams) -> EngineDelta:
    stream = engine.stream([BOS], params)
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    return first


# -- the stand-ins are as strict as the real objects -------------------------------------------------------

def test_the_012_completion_output_has_no_finish_reason() -> None:
    out = CompletionOutput012(0, token_ids=[9])
    with pytest.raises(AttributeError):
        out.finish_reason  # type: ignore[attr-defined] # noqa: B018 (the robot's AttributeError)
    with pytest.raises(AttributeError):
        out.finish_reason = "stop"  # type: ignore[attr-defined] # slots: no new attributes either
    assert not hasattr(out, "token_ids_diff") and not hasattr(out, "stop_reason") and out.text_diff == ""
    assert "max_tokens" not in {f.name for f in dataclasses.fields(SamplingParams012)}
    assert reported_finish(out) is None
    assert reported_finish(CompletionOutput1x(0, finish_reason="length")) == "length"
    assert reported_finish(CompletionOutput1x(0, stop_reason="###")) == "stop"


def test_finish_reason_without_a_reported_one() -> None:
    ends = {EOS, EOT}
    assert finish_reason(None, 3, 10, EOT, ends) == "stop"  # a stop id as the last token
    assert finish_reason(None, 10, 10, 9, ends) == "length"  # the budget used up
    assert finish_reason(None, 10, 10, EOT, ends) == "stop"  # ... by a stop id: stop
    assert finish_reason(None, 3, 10, 9, ends) == "stop"  # the end id, which the executor does not return
    assert finish_reason(None, 0, 10, None, ends) == "stop"
    assert finish_reason("length", 3, 10, 9, ends) == "length"  # 1.x: the engine's max_seq_len
    assert finish_reason("cancelled", 10, 10, 9, ends) == "length"


# -- 0.12.0-jetson, LLM API -----------------------------------------------------------------------------------

async def test_012_streams_with_its_names_and_derives_stop(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "0.12", [9, 10, 11, EOS])
    llm = llm_of(engine)
    assert llm.kwargs["skip_tokenizer_init"] is True and "guided_decoding_backend" not in llm.kwargs
    assert llm.kwargs["kv_cache_config"].free_gpu_memory_fraction == 0.3
    assert llm.kwargs["kv_cache_config"].enable_block_reuse is True  # the prefix cache, off by default in 0.12
    assert engine.capabilities.supports_grammar is False
    assert engine.capabilities.max_context == 128  # engine's 256 capped by context_length
    deltas = await collect(engine.stream([BOS, 5], SamplingParams(max_tokens=10, temperature=0.0, seed=7)))
    assert ids_of(deltas) == [9, 10, 11]
    assert all(d.n_tokens == len(d.token_ids) and d.text is None for d in deltas)
    assert [d.finish_reason for d in deltas] == [None, None, None, "stop"]  # the end id: not returned, stop
    sampling = llm.requests[0][1]
    assert (sampling.max_new_tokens, sampling.end_id, sampling.pad_id) == (10, EOS, PAD)
    assert sampling.top_k == 1 and sampling.temperature is None and sampling.random_seed == 7
    assert sampling.stop_token_ids == [EOT]  # <|eot|> from generation_config.json
    await engine.close()


async def test_012_finish_reason_from_stop_ids_and_budget(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "0.12", [9, EOT, 10])
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=8)))
    assert ids_of(deltas) == [9] and deltas[-1].finish_reason == "stop"  # <|eot|> returned, ends, never shown
    set_script(monkeypatch, [9, 10, 11, 12, 13])
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=3, temperature=0.7, top_p=0.9)))
    assert ids_of(deltas) == [9, 10, 11] and deltas[-1].finish_reason == "length"
    sampling = llm_of(engine).requests[1][1]
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.7, 0.9, None)
    # The budget never passes the context: 128 - 60 prompt tokens.
    deltas = await collect(engine.stream([BOS] * 60, SamplingParams(max_tokens=500)))
    assert llm_of(engine).requests[2][1].max_new_tokens == 68 and deltas[-1].finish_reason == "length"
    # No ignore_eos in 0.12: the executor's "no end id".
    set_script(monkeypatch, [9, EOS, 10])
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=3, ignore_eos=True)))
    sampling = llm_of(engine).requests[3][1]
    assert sampling.end_id == -1 and not sampling.stop_token_ids
    assert ids_of(deltas) == [9, EOS, 10] and deltas[-1].finish_reason == "length"
    with pytest.raises(EngineError, match="max_input_len"):
        await collect(engine.stream([BOS] * 65, SamplingParams(max_tokens=5)))
    with pytest.raises(EngineError, match="guided decoding"):
        await collect(engine.stream([BOS], SamplingParams(max_tokens=5, json_schema={"type": "object"})))
    await engine.close()


async def test_012_cancels_through_the_cpp_executor_and_shuts_down(engine_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "0.12", [9] * 50)
    llm = llm_of(engine)
    first = await close_after_first(engine, SamplingParams(max_tokens=40))
    assert first.token_ids == [9]
    assert llm._executor.engine.cancelled == [llm.results[0].request_id]
    assert engine.backend is not None and engine.backend.last_cancel == "LLM._executor.engine.cancel_request()"
    # A request that finished is not cancelled.
    await collect(engine.stream([BOS], SamplingParams(max_tokens=2)))
    assert llm._executor.engine.cancelled == [llm.results[0].request_id]
    await engine.close()
    assert llm.shut and engine.backend is None


# -- 1.x, LLM API ----------------------------------------------------------------------------------------------

async def test_1x_streams_reads_its_finish_reason_aborts_and_shuts_down(engine_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "1.x", [9, 10, EOT])
    llm = llm_of(engine)
    assert isinstance(llm, LLM1x)  # the engine LLM, not the PyTorch one
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=8, seed=3)))
    assert ids_of(deltas) == [9, 10] and deltas[-1].finish_reason == "stop"
    out = llm.results[0].outputs[0]
    assert (out.finish_reason, out.stop_reason, out.token_ids) == ("stop", EOT, [9, 10, EOT])
    sampling = llm.requests[0][1]
    assert sampling.max_tokens == 8 and sampling.seed == 3 and sampling.detokenize is False
    # The engine's max_seq_len ends a request before its budget: 1.x says length, which is taken as it is
    # (derived, 5 of 8 tokens without an end id would be stop).
    set_script(monkeypatch, [9, 10, 11, 12, 13, 14])
    monkeypatch.setattr(LLM012, "room", 5)
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=8)))
    assert len(ids_of(deltas)) == 5 and deltas[-1].finish_reason == "length"
    monkeypatch.setattr(LLM012, "room", None)
    await close_after_first(engine, SamplingParams(max_tokens=40))
    assert llm.aborted == [llm.results[2].request_id]
    assert engine.backend is not None and engine.backend.last_cancel == "RequestOutput.abort()"
    await engine.close()
    assert llm.shut


async def test_1x_guided_decoding_and_ignore_eos(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "1.x", [9, EOT, 10])
    llm = llm_of(engine)
    assert llm.kwargs["guided_decoding_backend"] == "xgrammar" and llm.kwargs["tokenizer"] == str(engine_dir)
    assert engine.capabilities.supports_grammar is True
    schema: dict[str, object] = {"type": "object"}
    await collect(engine.stream([BOS], SamplingParams(max_tokens=8, json_schema=schema)))
    assert llm.requests[0][1].guided_decoding == GuidedDecodingParams(json=schema)
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=3, ignore_eos=True)))
    sampling = llm.requests[1][1]
    assert sampling.ignore_eos is True and not sampling.stop_token_ids
    assert ids_of(deltas) == [9, EOT, 10] and deltas[-1].finish_reason == "length"
    info = engine.info()
    assert info["engine"] == "trtllm" and info["path"] == str(engine_dir) and info["api"] == "llm"
    assert info["manifest"] == {"model": "tiny", "quantization": "int4_awq"}
    assert info["quantization"] == "W4A16_AWQ" and info["tensorrt_llm_version"] == "1.0.0"
    await engine.close()


async def test_1x_reports_the_prompt_tokens_its_kv_cache_reused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    engine_dir = write_engine_dir(tmp_path / "engine", tokens_per_block=4)
    engine = await loaded(engine_dir, monkeypatch, "1.x", [9, EOT])
    llm = llm_of(engine)
    prefix = [BOS, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # 10 tokens: two whole blocks of 4, and 2 more
    first = await collect(engine.stream([*prefix, 12], SamplingParams(max_tokens=4)))
    assert llm.requests[0][1].return_perf_metrics is True
    assert first[0].cached_tokens == 0  # nothing to reuse yet: a real 0, not "unknown"
    second = await collect(engine.stream([*prefix, 13, 14], SamplingParams(max_tokens=4)))
    assert {d.cached_tokens for d in second} == {8}  # the two whole blocks, on every delta
    # A prompt that is all of an earlier one: its last token is computed again, so at most len - 1.
    again = await collect(engine.stream(prefix[:9], SamplingParams(max_tokens=4)))
    assert again[0].cached_tokens == 8
    await engine.close()
    # An engine whose config does not say its block size: the count is not guessed.
    engine = await loaded(write_engine_dir(tmp_path / "other"), monkeypatch, "1.x", [9, EOT])
    assert engine.backend is not None and engine.backend.tokens_per_block is None  # type: ignore[union-attr]
    deltas = await collect(engine.stream(prefix, SamplingParams(max_tokens=4)))
    assert all(d.cached_tokens is None for d in deltas)
    await engine.close()


def test_cached_tokens_also_come_from_the_result_where_a_build_counts_them() -> None:
    backend = LlmApiBackend(object(), None, SamplingParams1x, None, tokens_per_block=None)  # type: ignore[arg-type]
    output = types.SimpleNamespace(cached_tokens=7)
    completion = types.SimpleNamespace(request_perf_metrics=None)
    assert backend.cached_tokens(output, completion, prompt_len=5) == 5  # never more than the prompt
    assert backend.cached_tokens(types.SimpleNamespace(cached_tokens=0), completion, 5) is None  # 0: not counted
    assert backend.cached_tokens(object(), object(), 5) is None  # 0.12: nothing reported


# -- ModelRunnerCpp: 0.12.0-jetson (`session`) and later (`executor`) ------------------------------------------

@pytest.mark.parametrize(("version", "attr"), [("0.12-runner", "session"), ("1.x-runner", "executor")])
async def test_runner_streams_cancels_and_shuts_down(engine_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                     version: str, attr: str) -> None:
    engine = await loaded(engine_dir, monkeypatch, version, [9, 10, EOT], kv_fraction=0.4)
    runner = runner_of(engine)
    backend = engine.backend
    assert isinstance(backend, RunnerBackend) and backend.executor_attr == attr
    assert engine.info()["api"] == "model_runner_cpp"
    assert runner.calls[0] == {"engine_dir": str(engine_dir), "rank": 0, "fraction": 0.4, "block_reuse": True}
    other = {"session": "executor", "executor": "session"}[attr]
    assert not hasattr(runner, other)  # nothing is made up on the runner
    executor: RunnerExecutor = getattr(runner, attr)._executor  # under the request-id recorder
    deltas = await collect(engine.stream([BOS, 5], SamplingParams(max_tokens=10, temperature=0.0, seed=1)))
    assert ids_of(deltas) == [9, 10] and deltas[-1].finish_reason == "stop"  # the stop word: derived
    kw = runner.calls[1]
    assert kw["top_k"] == 1 and kw["random_seed"] == 1 and kw["stop_words_list"] == [[[EOT]]]
    assert kw["streaming"] is True and kw["end_id"] == EOS and kw["pad_id"] == PAD
    set_script(monkeypatch, [9] * 10)
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=4)))
    assert ids_of(deltas) == [9] * 4 and deltas[-1].finish_reason == "length"
    # Closed early: cancelled through the executor by the id it gave, the request ends with its next
    # response, long before its 127 tokens (the context's room), and the worker is free again.
    set_script(monkeypatch, [9] * 500)
    runner.steps = 0
    await close_after_first(engine, SamplingParams(max_tokens=500, ignore_eos=True))
    assert executor.cancelled == [9]  # ids 7 and 8 went to the requests before
    assert runner.calls[-1]["max_new_tokens"] == 127 and runner.steps < 127
    assert backend.last_cancel == f"ModelRunnerCpp.{attr}.cancel_request()"
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=2)))
    assert ids_of(deltas) == [9, 9]  # the next request runs normally
    await engine.close()
    assert executor.shut


async def test_runner_without_an_executor_drains_a_closed_request(engine_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner whose `session` is no executor (the old GptSession runner): nothing to cancel through."""
    install_fake(monkeypatch, "0.12-runner")
    set_script(monkeypatch, [9] * 30)

    class NoExecutor:
        def __init__(self, real: RunnerExecutor) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            if name == "enqueue_requests":
                raise AttributeError(name)
            return getattr(self.real, name)

    class OldRunner(Runner012):
        @property
        def _exec(self) -> Any:
            return self.session.real

    monkeypatch.setattr(OldRunner, "from_dir", classmethod(lambda cls, *a, **k: cls(NoExecutor(RunnerExecutor()))))
    monkeypatch.setitem(sys.modules, "tensorrt_llm.runtime", module("tensorrt_llm.runtime", ModelRunnerCpp=OldRunner))
    engine = trtllm.TrtLlmEngine(config_for(engine_dir))
    await engine.load()
    backend = engine.backend
    assert isinstance(backend, RunnerBackend) and backend.executor_attr is None
    await close_after_first(engine, SamplingParams(max_tokens=20, ignore_eos=True))
    assert backend.last_cancel.startswith("none") and runner_of(engine).steps == 20  # drained to its end
    await engine.close()
