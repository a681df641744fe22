"""TensorRT-LLM engine and HF tokenizer.

Always run: the module imports without tensorrt_llm, the errors name what to install or set, the HF
tokenizer on a tiny tokenizer built here, and the engine's streaming logic against stand-ins for the two
TensorRT-LLM APIs it supports (0.12-jetson and 1.x), since this machine has no GPU to run the real one.
Marked `trtllm`: the real engine on a GPU with tensorrt_llm installed and WATUS_TEST_TRTLLM_ENGINE set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from trt_server.engines import select_engine, trtllm
from trt_server.engines.base import (
    EngineDelta,
    EngineError,
    EngineNotInstalledError,
    ModelNotFoundError,
    SamplingParams,
)
from trt_server.engines.hf_tokenizer import HFTokenizer
from trt_server.engines.trtllm_llmapi import LlmApiBackend
from trt_server.settings import EngineKind, LLMSettings

pytest.importorskip("tokenizers", reason="the tokenizer tests build a tokenizer with `tokenizers`")

VOCAB = {"<unk>": 0, "<s>": 1, "</s>": 2, "<|eot|>": 3, "<pad>": 4, "hello": 5, "world": 6, "user": 7,
         "assistant": 8, "a": 9, "b": 10, "c": 11, "d": 12, "e": 13}
BOS, EOS, EOT, PAD = 1, 2, 3, 4
TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <|eot|> {% endfor %}"


# -- fixtures: a tiny tokenizer and a fake engine directory ---------------------------------------------

def write_tokenizer(path: Path, *, config: dict[str, Any] | None = None,
                    generation: dict[str, Any] | None = None) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<|eot|>", "<pad>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    tok.save(str(path / "tokenizer.json"))
    cfg = {
        "bos_token": {"content": "<s>", "special": True},
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "chat_template": [{"name": "default", "template": TEMPLATE},
                          {"name": "tool_use", "template": "tools {{ tools }}"}],
    }
    cfg.update(config or {})
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    gen = {"eos_token_id": [EOS, EOT]} if generation is None else generation
    (path / "generation_config.json").write_text(json.dumps(gen))
    return path


def write_engine_dir(path: Path, *, max_input: int = 64, max_seq: int = 256) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "version": "0.12.0",
        "pretrained_config": {"architecture": "LlamaForCausalLM", "dtype": "float16",
                              "quantization": {"quant_algo": "W4A16_AWQ"}},
        "build_config": {"max_input_len": max_input, "max_seq_len": max_seq, "max_batch_size": 4},
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "rank0.engine").write_bytes(b"\0")
    write_tokenizer(path)
    return path


def config_for(engine_dir: Path | None, *, context_length: int = 2048, kv_cache_free_gpu_memory_fraction: float = 0.5,
               tokenizer_dir: Path | None = None) -> trtllm.TrtLlmConfig:
    return trtllm.TrtLlmConfig(engine_dir=engine_dir, context_length=context_length,
                               kv_cache_free_gpu_memory_fraction=kv_cache_free_gpu_memory_fraction,
                               tokenizer_dir=tokenizer_dir)


def llm_of(engine: trtllm.TrtLlmEngine) -> Any:
    """The stand-in `LLM` object the engine loaded."""
    backend = engine._backend
    assert isinstance(backend, LlmApiBackend)
    return backend.llm


@pytest.fixture
def hide_tensorrt_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import tensorrt_llm` fail, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)


# -- always run: imports and errors ---------------------------------------------------------------------

def test_module_imports_without_tensorrt_llm_or_torch() -> None:
    code = ("import sys; sys.modules['tensorrt_llm'] = None; import trt_server.engines.trtllm; "
            "heavy = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_construct_without_tensorrt_llm_says_what_to_install(tmp_path: Path, hide_tensorrt_llm: None) -> None:
    with pytest.raises(EngineNotInstalledError) as e:
        trtllm.TrtLlmEngine(config_for(write_engine_dir(tmp_path / "engine")))
    message = str(e.value)
    assert "0.12.0-jetson" in message and "deploy/jetson/setup.sh" in message
    assert "pip install tensorrt-llm" in message and "WATUS_LLM_ENGINE=llamacpp" in message


async def test_load_without_tensorrt_llm_says_what_to_install(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    # Past the constructor's cheap check (as if installed), then the import itself fails.
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "tensorrt_llm" else real(name, *a))
    engine = trtllm.TrtLlmEngine(config_for(write_engine_dir(tmp_path / "engine")))
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(EngineNotInstalledError, match=r"0\.12\.0-jetson"):
        await engine.load()
    assert not engine.ready()


def test_select_engine_passes_the_settings_it_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "tensorrt_llm" else real(name, *a))
    engine_dir = write_engine_dir(tmp_path / "engine")
    tokenizer_dir = write_tokenizer(tmp_path / "hf")
    engine = select_engine(LLMSettings(engine=EngineKind.trtllm, model_path=engine_dir, tokenizer_path=tokenizer_dir,
                                       model_name="robot", context_length=200))
    assert isinstance(engine, trtllm.TrtLlmEngine)
    assert (engine.model_id, engine.capabilities.max_context) == ("robot", 200)
    assert (engine.engine_dir, engine.tokenizer_dir) == (engine_dir, tokenizer_dir)


@pytest.mark.parametrize("case", ["unset", "missing", "not-an-engine", "bad-config"])
def test_missing_engine_dir_names_the_setting(tmp_path: Path, case: str) -> None:
    path: Path | None = tmp_path / "nowhere"
    if case == "unset":
        path = None
    elif case == "not-an-engine":
        write_tokenizer(tmp_path / "hf")
        path = tmp_path / "hf"
    elif case == "bad-config":
        path = write_engine_dir(tmp_path / "engine")
        (path / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="WATUS_LLM_MODEL_PATH"):
        trtllm.TrtLlmEngine(config_for(path))


def test_missing_tokenizer_names_the_setting(tmp_path: Path) -> None:
    engine_dir = write_engine_dir(tmp_path / "engine")
    with pytest.raises(ModelNotFoundError, match="WATUS_LLM_TOKENIZER_PATH"):
        trtllm.TrtLlmEngine(config_for(engine_dir, tokenizer_dir=tmp_path / "no-tokenizer"))


def test_engine_limits_are_capped_by_settings() -> None:
    config = {"build_config": {"max_input_len": 3000, "max_seq_len": 8192}}
    assert trtllm.engine_limits(config, 4096) == (4096, 3000)
    assert trtllm.engine_limits(config, 2048) == (2048, 2048)
    # Engines from before max_seq_len: input + output length.
    old = {"build_config": {"max_input_len": 512, "max_output_len": 256}}
    assert trtllm.engine_limits(old, 4096) == (768, 512)
    assert trtllm.engine_limits({}, 2048) == (2048, 2048)


# -- always run: HFTokenizer ------------------------------------------------------------------------------

def test_tokenizer_round_trip_and_specials(tmp_path: Path) -> None:
    tok = HFTokenizer(write_tokenizer(tmp_path / "tok"), prefer_transformers=False)
    ids = tok.encode("hello world")
    assert ids == [VOCAB["hello"], VOCAB["world"]]
    assert tok.decode(ids) == "hello world"
    assert tok.encode("hello world", add_special=True) == [BOS, *ids]
    assert tok.add_bos is True
    assert (tok.bos_token, tok.eos_token) == ("<s>", "</s>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS, EOS, PAD)
    # Special tokens stay in decoded text (the tool-call parser looks for some).
    assert tok.decode([VOCAB["hello"], EOT]) == "hello <|eot|>"


def test_tokenizer_does_not_double_bos(tmp_path: Path) -> None:
    tok = HFTokenizer(write_tokenizer(tmp_path / "tok"), prefer_transformers=False)
    assert tok.encode("<s> hello", add_special=True) == [BOS, VOCAB["hello"]]
    assert tok.encode("<s> hello", add_special=False) == [BOS, VOCAB["hello"]]


def test_tokenizer_chat_template_and_eos_ids(tmp_path: Path) -> None:
    tok = HFTokenizer(write_tokenizer(tmp_path / "tok"), prefer_transformers=False)
    assert tok.chat_template == TEMPLATE  # "default" of the named templates
    assert tok.eos_token_ids == [EOS, EOT]  # EOS plus generation_config.json's list
    import jinja2

    text = jinja2.Template(tok.chat_template).render(bos_token=tok.bos_token,
                                                     messages=[{"role": "user", "content": "hello"}])
    assert tok.encode(text, add_special=True) == [BOS, VOCAB["user"], VOCAB["hello"], EOT]


def test_tokenizer_config_variants(tmp_path: Path) -> None:
    config = {"chat_template": "{{ messages }}", "add_bos_token": False, "bos_token": "<s>",
              "eos_token": {"content": "<|eot|>"}}
    path = write_tokenizer(tmp_path / "tok", config=config, generation={"eos_token_id": EOS})
    tok = HFTokenizer(path, prefer_transformers=False)
    assert tok.chat_template == "{{ messages }}"
    # add_bos_token in the config overrides tokenizer.json's post-processor, as transformers does.
    assert tok.encode("hello", add_special=True) == [VOCAB["hello"]]
    assert tok.add_bos is False
    assert tok.eos_token_ids == [EOT, EOS]


def test_tokenizer_reads_separate_template_file(tmp_path: Path) -> None:
    path = write_tokenizer(tmp_path / "tok", config={"chat_template": None})
    (path / "chat_template.jinja").write_text("{{ 'x' }}")
    assert HFTokenizer(path, prefer_transformers=False).chat_template == "{{ 'x' }}"


def test_tokenizer_default_backend_round_trips(tmp_path: Path) -> None:
    tok = HFTokenizer(write_tokenizer(tmp_path / "tok"))  # transformers where installed
    assert tok.decode(tok.encode("hello world")) == "hello world"


def test_tokenizer_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="WATUS_LLM_TOKENIZER_PATH"):
        HFTokenizer(tmp_path)


# -- always run: the engine against stand-ins for the TensorRT-LLM APIs ---------------------------------

@dataclasses.dataclass
class FakeCompletion:
    token_ids: list[int] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None


class FakeResult:
    """Cumulative token_ids, one step per iteration, like RequestOutput in streaming mode."""

    def __init__(self, llm: FakeLLM, prompt: list[int], sampling: Any, *, report_reason: bool) -> None:
        self.request_id = len(llm.requests) + 100
        self.outputs = [FakeCompletion()]
        self.finished = False
        self._script = list(llm.script)
        self._max = sampling.max_tokens
        self._report = report_reason
        self._end = sampling.end_id
        self._stops = {sampling.end_id, *(sampling.stop_token_ids or [])}

    def __aiter__(self) -> FakeResult:
        return self

    async def __anext__(self) -> FakeResult:
        if self.finished:
            raise StopAsyncIteration
        await asyncio.sleep(0)
        out = self.outputs[0]
        token = self._script.pop(0) if self._script else 9
        stop = token in self._stops
        if token != self._end:  # end_id is not returned; this stand-in leaves stop tokens in
            out.token_ids.append(token)
        if stop or len(out.token_ids) >= self._max:
            self.finished = True
            if self._report:
                out.finish_reason = "stop" if stop else "length"
        return self


class FakeLLM:
    script: ClassVar[list[int]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.requests: list[tuple[list[int], Any]] = []
        self.results: list[FakeResult] = []
        self.cancelled: list[int] = []
        self.aborted: list[int] = []
        self.shut = False
        llm = self

        class Engine:  # 0.12: the in-process executor's C++ handle
            def cancel_request(self, rid: int) -> None:
                llm.cancelled.append(rid)

        self._executor = types.SimpleNamespace(engine=Engine())

    def generate_async(self, prompt: list[int], sampling: Any, streaming: bool = False) -> FakeResult:
        assert streaming
        result = self._result(prompt, sampling)
        self.requests.append((prompt, sampling))
        self.results.append(result)
        return result

    def _result(self, prompt: list[int], sampling: Any) -> FakeResult:
        return FakeResult(self, prompt, sampling, report_reason=False)

    def _shutdown(self) -> None:
        self.shut = True


class FakeLLM1x(FakeLLM):
    def _result(self, prompt: list[int], sampling: Any) -> FakeResult:
        result = FakeResult(self, prompt, sampling, report_reason=True)
        result.abort = lambda: self.aborted.append(result.request_id)  # type: ignore[attr-defined]
        return result

    def shutdown(self) -> None:
        self.shut = True


@dataclasses.dataclass(kw_only=True)
class SamplingParams012:
    end_id: int | None = None
    pad_id: int | None = None
    max_tokens: int = 32
    stop_token_ids: list[int] | None = None
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    random_seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclasses.dataclass(kw_only=True)
class SamplingParams1x(SamplingParams012):
    seed: int | None = None
    ignore_eos: bool = False
    detokenize: bool = True
    guided_decoding: Any = None


@dataclasses.dataclass(kw_only=True)
class GuidedDecodingParams:
    json: Any = None


@dataclasses.dataclass(kw_only=True)
class KvCacheConfig:
    free_gpu_memory_fraction: float | None = None


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    return module


def install_fake(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """Put a stand-in tensorrt_llm of the given API generation into sys.modules."""
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        monkeypatch.delitem(sys.modules, name)
    if version == "0.12":
        modules = {"tensorrt_llm": _module("tensorrt_llm", __version__="0.12.0", LLM=FakeLLM,
                                           SamplingParams=SamplingParams012),
                   "tensorrt_llm.hlapi": _module("tensorrt_llm.hlapi", KvCacheConfig=KvCacheConfig)}
    else:
        modules = {"tensorrt_llm": _module("tensorrt_llm", __version__="1.0.0", LLM=object,
                                           SamplingParams=SamplingParams1x),
                   "tensorrt_llm._tensorrt_engine": _module("tensorrt_llm._tensorrt_engine", LLM=FakeLLM1x),
                   "tensorrt_llm.llmapi": _module("tensorrt_llm.llmapi", KvCacheConfig=KvCacheConfig,
                                                  GuidedDecodingParams=GuidedDecodingParams),
                   "xgrammar": _module("xgrammar")}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


async def collect(stream: AsyncIterator[EngineDelta]) -> list[EngineDelta]:
    return [d async for d in stream]


def ids_of(deltas: list[EngineDelta]) -> list[int]:
    return [i for d in deltas for i in d.token_ids]


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    path = write_engine_dir(tmp_path / "engine")
    (path / trtllm.MANIFEST_FILE).write_text(json.dumps({"model": "tiny", "quantization": "int4_awq"}))
    return path


async def loaded(engine_dir: Path, monkeypatch: pytest.MonkeyPatch, version: str,
                 script: list[int]) -> trtllm.TrtLlmEngine:
    install_fake(monkeypatch, version)
    monkeypatch.setattr(FakeLLM, "script", script)
    engine = trtllm.TrtLlmEngine(config_for(engine_dir, context_length=128,
                                              kv_cache_free_gpu_memory_fraction=0.3))
    await engine.load()
    assert engine.ready()
    return engine


async def test_fake_012_streams_and_maps_sampling(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "0.12", [9, 10, 11, EOS])
    llm = llm_of(engine)
    assert llm.kwargs["skip_tokenizer_init"] is True and "guided_decoding_backend" not in llm.kwargs
    assert llm.kwargs["kv_cache_config"].free_gpu_memory_fraction == 0.3
    assert engine.capabilities.supports_grammar is False
    assert engine.capabilities.max_context == 128  # engine's 256 capped by context_length
    deltas = await collect(engine.stream([BOS, 5], SamplingParams(max_tokens=10, temperature=0.0, seed=7)))
    assert ids_of(deltas) == [9, 10, 11]
    assert all(d.n_tokens == len(d.token_ids) and d.text is None for d in deltas)
    assert [d.finish_reason for d in deltas] == [None, None, None, "stop"]
    sampling = llm.requests[0][1]
    assert (sampling.max_tokens, sampling.end_id, sampling.pad_id) == (10, EOS, PAD)
    assert sampling.top_k == 1 and sampling.temperature is None and sampling.random_seed == 7
    assert sampling.stop_token_ids == [EOT]  # <|eot|> from generation_config.json
    await engine.close()
    assert llm.shut


async def test_fake_stream_length_and_eot(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "0.12", [9, 10, 11, 12, 13])
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=3, temperature=0.7, top_p=0.9)))
    assert ids_of(deltas) == [9, 10, 11] and deltas[-1].finish_reason == "length"
    sampling = llm_of(engine).requests[0][1]
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.7, 0.9, None)
    # The max_tokens budget never passes the context: 128 - 126 prompt tokens.
    FakeLLM.script = [9, EOT]
    deltas = await collect(engine.stream([BOS] * 60, SamplingParams(max_tokens=500)))
    assert ids_of(deltas) == [9] and deltas[-1].finish_reason == "stop"  # <|eot|> ends, never shown
    assert llm_of(engine).requests[1][1].max_tokens == 68
    with pytest.raises(EngineError, match="max_input_len"):
        await collect(engine.stream([BOS] * 65, SamplingParams(max_tokens=5)))
    with pytest.raises(EngineError, match="guided decoding"):
        await collect(engine.stream([BOS], SamplingParams(max_tokens=5, json_schema={"type": "object"})))
    await engine.close()


async def test_fake_012_early_close_cancels(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "0.12", [9] * 50)
    stream = engine.stream([BOS], SamplingParams(max_tokens=40))
    first = await anext(stream)
    assert first.token_ids == [9]
    await stream.aclose()  # type: ignore[attr-defined]
    assert llm_of(engine).cancelled == [llm_of(engine).results[0].request_id]
    await engine.close()


async def test_fake_1x_guided_seed_and_abort(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "1.x", [9, 10, EOS])
    llm = llm_of(engine)
    assert isinstance(llm, FakeLLM1x)  # the engine LLM, not the PyTorch one
    assert llm.kwargs["guided_decoding_backend"] == "xgrammar"
    assert llm.kwargs["tokenizer"] == str(engine_dir)
    assert engine.capabilities.supports_grammar is True
    schema: dict[str, object] = {"type": "object"}
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=8, seed=3, json_schema=schema,
                                                               ignore_eos=False)))
    assert ids_of(deltas) == [9, 10] and deltas[-1].finish_reason == "stop"
    sampling = llm.requests[0][1]
    assert sampling.seed == 3 and sampling.random_seed is None and sampling.detokenize is False
    assert sampling.guided_decoding == GuidedDecodingParams(json=schema)
    FakeLLM.script = [9] * 50
    stream = engine.stream([BOS], SamplingParams(max_tokens=40))
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert llm.aborted == [llm.results[1].request_id]
    info = engine.info()
    assert info["engine"] == "trtllm" and info["path"] == str(engine_dir) and info["api"] == "llm"
    assert info["manifest"] == {"model": "tiny", "quantization": "int4_awq"}
    assert info["quantization"] == "W4A16_AWQ" and info["tensorrt_llm_version"] == "1.0.0"
    await engine.close()
    assert llm.shut


async def test_fake_1x_ignore_eos(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "1.x", [9, EOT, 10])
    deltas = await collect(engine.stream([BOS], SamplingParams(max_tokens=3, ignore_eos=True)))
    sampling = llm_of(engine).requests[0][1]
    assert sampling.ignore_eos is True and not sampling.stop_token_ids
    assert ids_of(deltas) == [9, EOT, 10] and deltas[-1].finish_reason == "length"
    await engine.close()


# -- always run: the ModelRunnerCpp fallback, with stand-ins for torch and the runner ------------------

class FakeRow(list[int]):
    def tolist(self) -> list[int]:
        return list(self)

    def __getitem__(self, item: Any) -> Any:
        value = super().__getitem__(item)
        return FakeRow(value) if isinstance(item, slice) else value


class FakeExecutor:
    def __init__(self) -> None:
        self.cancelled: list[int] = []
        self.shut = False

    def enqueue_requests(self, requests: list[Any]) -> list[int]:
        return [7]

    def cancel_request(self, rid: int) -> None:
        self.cancelled.append(rid)

    def shutdown(self) -> None:
        self.shut = True


class FakeRunner:
    script: ClassVar[list[int]] = []
    instance: ClassVar[FakeRunner | None] = None

    def __init__(self) -> None:
        self.executor: Any = FakeExecutor()
        self.calls: list[dict[str, Any]] = []
        FakeRunner.instance = self

    @classmethod
    def from_dir(cls, engine_dir: str, *, rank: int = 0,
                 kv_cache_free_gpu_memory_fraction: float | None = None) -> FakeRunner:
        runner = cls()
        runner.calls.append({"engine_dir": engine_dir, "fraction": kv_cache_free_gpu_memory_fraction})
        return runner

    def generate(self, batch: list[list[int]], **kw: Any) -> Any:
        self.calls.append(kw)
        self.executor.enqueue_requests([batch])
        prompt = list(batch[0])
        out = list(prompt)
        for token in self.script[: kw["max_new_tokens"]]:
            if token == kw["end_id"]:
                break
            out.append(token)
            time.sleep(0.005)  # a decoding step
            yield {"output_ids": [[FakeRow(out + [kw["end_id"]] * 4)]], "sequence_lengths": [[len(out)]]}
            if self.executor.cancelled:
                return


def install_fake_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        monkeypatch.delitem(sys.modules, name)
    torch = _module("torch", int32="int32", tensor=lambda ids, dtype=None: list(ids),
                    no_grad=contextlib.nullcontext)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", _module("tensorrt_llm", __version__="0.9.0",
                                                              mpi_rank=lambda: 0))
    monkeypatch.setitem(sys.modules, "tensorrt_llm.runtime", _module("tensorrt_llm.runtime",
                                                                      ModelRunnerCpp=FakeRunner))


async def test_fake_runner_fallback(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_runner(monkeypatch)
    monkeypatch.setattr(FakeRunner, "script", [9, 10, EOT])
    engine = trtllm.TrtLlmEngine(config_for(engine_dir, kv_cache_free_gpu_memory_fraction=0.4))
    await engine.load()
    runner = FakeRunner.instance
    assert runner is not None and engine.info()["api"] == "model_runner_cpp"
    assert runner.calls[0] == {"engine_dir": str(engine_dir), "fraction": 0.4}
    deltas = await collect(engine.stream([BOS, 5], SamplingParams(max_tokens=10, temperature=0.0, seed=1)))
    assert ids_of(deltas) == [9, 10] and deltas[-1].finish_reason == "stop"
    kw = runner.calls[1]
    assert kw["top_k"] == 1 and kw["random_seed"] == 1 and kw["stop_words_list"] == [[[EOT]]]
    assert kw["streaming"] is True and kw["end_id"] == EOS and kw["pad_id"] == PAD
    # Early close cancels the request by the id the runner's executor gave it.
    monkeypatch.setattr(FakeRunner, "script", [9] * 30)
    stream = engine.stream([BOS], SamplingParams(max_tokens=30))
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert runner.executor.cancelled == [7]
    await engine.close()


# -- GPU: the real TensorRT-LLM ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def real_engine() -> AsyncIterator[trtllm.TrtLlmEngine]:
    pytest.importorskip("tensorrt_llm", reason="needs TensorRT-LLM and an NVIDIA GPU (robot or x86 GPU box)")
    path = os.environ.get("WATUS_TEST_TRTLLM_ENGINE")
    if not path:
        pytest.skip("set WATUS_TEST_TRTLLM_ENGINE to a TensorRT-LLM engine directory (and "
                    "WATUS_TEST_TRTLLM_TOKENIZER if its tokenizer lives elsewhere)")
    tokenizer = os.environ.get("WATUS_TEST_TRTLLM_TOKENIZER")
    config = config_for(Path(path), tokenizer_dir=Path(tokenizer) if tokenizer else None,
                        context_length=2048, kv_cache_free_gpu_memory_fraction=0.3)
    engine = trtllm.TrtLlmEngine(config)
    await engine.load()
    yield engine
    await engine.close()


def _prompt(engine: trtllm.TrtLlmEngine) -> list[int]:
    return engine.tokenizer.encode("The capital of France is", add_special=True)


@pytest.mark.trtllm
async def test_real_greedy_stream(real_engine: trtllm.TrtLlmEngine) -> None:
    params = SamplingParams(max_tokens=12, temperature=0.0)
    first = await collect(real_engine.stream(_prompt(real_engine), params))
    second = await collect(real_engine.stream(_prompt(real_engine), params))
    ids = ids_of(first)
    assert 0 < len(ids) <= 12 and ids == ids_of(second)  # greedy is deterministic
    assert first[-1].finish_reason in ("stop", "length")
    assert all(d.finish_reason is None for d in first[:-1])
    if first[-1].finish_reason == "length":
        assert len(ids) == 12
    assert real_engine.tokenizer.decode(ids).strip()


@pytest.mark.trtllm
async def test_real_early_close_aborts(real_engine: trtllm.TrtLlmEngine) -> None:
    stream = real_engine.stream(_prompt(real_engine), SamplingParams(max_tokens=1500, ignore_eos=True))
    got = 0
    async for delta in stream:
        got += delta.n_tokens
        if got >= 3:
            break
    started = time.perf_counter()
    await stream.aclose()  # type: ignore[attr-defined]
    assert time.perf_counter() - started < 5.0
    # The engine serves the next request at once: the aborted one no longer holds its slot.
    again = real_engine.stream(_prompt(real_engine), SamplingParams(max_tokens=4, temperature=0.0))
    deltas = await asyncio.wait_for(collect(again), 60)
    assert deltas[-1].finish_reason in ("stop", "length")

