"""TensorRT-LLM engine and HF tokenizer.

Always run: the module imports without tensorrt_llm, the errors name what to install or set, and the HF
tokenizer on a tiny tokenizer built here. The engine's streaming logic against stand-ins shaped like each
TensorRT-LLM version is in test_trtllm_versions.py, the self-test in test_trtllm_selftest.py.
Marked `trtllm`: the real engine on a GPU with tensorrt_llm installed and WATUS_TEST_TRTLLM_ENGINE set:
both backends (the `LLM` API, and `ModelRunnerCpp` forced), the early close, and the doctor's self-test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from trt_server.engines import select_engine, trtllm
from trt_server.engines.base import (
    EngineDelta,
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


def write_engine_dir(path: Path, *, max_input: int = 64, max_seq: int = 256,
                     tokens_per_block: int | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    build: dict[str, object] = {"max_input_len": max_input, "max_seq_len": max_seq, "max_batch_size": 4}
    if tokens_per_block is not None:  # trtllm-build writes it into the plugin config
        build["plugin_config"] = {"paged_kv_cache": True, "tokens_per_block": tokens_per_block}
    config = {
        "version": "0.12.0",
        "pretrained_config": {"architecture": "LlamaForCausalLM", "dtype": "float16",
                              "quantization": {"quant_algo": "W4A16_AWQ"}},
        "build_config": build,
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


# -- GPU: the real TensorRT-LLM ----------------------------------------------------------------------------

def _real_config() -> trtllm.TrtLlmConfig:
    pytest.importorskip("tensorrt_llm", reason="needs TensorRT-LLM and an NVIDIA GPU (robot or x86 GPU box)")
    path = os.environ.get("WATUS_TEST_TRTLLM_ENGINE")
    if not path:
        pytest.skip("set WATUS_TEST_TRTLLM_ENGINE to a TensorRT-LLM engine directory (and "
                    "WATUS_TEST_TRTLLM_TOKENIZER if its tokenizer lives elsewhere)")
    tokenizer = os.environ.get("WATUS_TEST_TRTLLM_TOKENIZER")
    return config_for(Path(path), tokenizer_dir=Path(tokenizer) if tokenizer else None,
                      context_length=2048, kv_cache_free_gpu_memory_fraction=0.3)


@pytest.fixture(scope="module", params=["llm", "model_runner_cpp"])
async def real_engine(request: pytest.FixtureRequest) -> AsyncIterator[trtllm.TrtLlmEngine]:
    """The real engine through the `LLM` API, then through `ModelRunnerCpp` (forced: the API hidden)."""
    config = _real_config()
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "model_runner_cpp":
            patch.setattr(LlmApiBackend, "open", classmethod(lambda cls, *a, **k: None))
        engine = trtllm.TrtLlmEngine(config)
        await engine.load()
    info = engine.info()
    assert info["api"] == request.param, info
    yield engine
    await engine.close()


def _prompt(engine: trtllm.TrtLlmEngine) -> list[int]:
    return engine.tokenizer.encode("The capital of France is", add_special=True)


async def collect(stream: AsyncIterator[EngineDelta]) -> list[EngineDelta]:
    return [d async for d in stream]


def ids_of(deltas: list[EngineDelta]) -> list[int]:
    return [i for d in deltas for i in d.token_ids]


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
async def test_real_length_and_ignore_eos(real_engine: trtllm.TrtLlmEngine) -> None:
    deltas = await collect(real_engine.stream(_prompt(real_engine), SamplingParams(max_tokens=5, ignore_eos=True)))
    assert len(ids_of(deltas)) == 5 and deltas[-1].finish_reason == "length"


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
    backend = real_engine.backend
    assert backend is not None and backend.last_cancel and not backend.last_cancel.startswith("none"), \
        backend.last_cancel if backend else None
    # The engine serves the next request at once: the aborted one no longer holds its slot.
    again = real_engine.stream(_prompt(real_engine), SamplingParams(max_tokens=4, temperature=0.0))
    deltas = await asyncio.wait_for(collect(again), 60)
    assert deltas[-1].finish_reason in ("stop", "length")


@pytest.mark.trtllm
async def test_real_self_test(real_engine: trtllm.TrtLlmEngine) -> None:
    """What `watus doctor` runs on the robot, on the loaded engine (both backends)."""
    from trt_server.engines.trtllm_selftest import self_test

    report = await self_test(real_engine)
    assert report.finish_reason in ("stop", "length") and 0 <= report.tokens <= 4
    assert report.ttft_ms > 0 and report.close_ms < 5000
    assert report.api == real_engine.info()["api"]
