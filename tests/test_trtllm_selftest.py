"""The TensorRT-LLM self-test `watus doctor` runs on the robot, against the per-version stand-ins.

The stand-ins (test_trtllm_versions.py) have the shapes of 0.12.0-jetson and 1.x, for the `LLM` API and
for `ModelRunnerCpp`; the self-test must pass on each, report how a request was cancelled, and turn an
output object of an unexpected shape (the robot's AttributeError) into a doctor problem, not a crash.
Which engine the doctor tests, or why it skips, comes from the LLM server's settings.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.test_trtllm_engine import write_engine_dir
from tests.test_trtllm_versions import LLM012, RequestOutput012, install_fake, loaded, set_script
from trt_server.engines import trtllm_selftest as selftest
from trt_server.engines.trtllm import TrtLlmConfig
from trt_server.settings import EngineKind, LLMSettings

pytest.importorskip("tokenizers", reason="the engine loads the tiny tokenizer with `tokenizers`")


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    return write_engine_dir(tmp_path / "engine")


@pytest.mark.parametrize(("version", "cancel"), [
    ("0.12", "LLM._executor.engine.cancel_request()"),
    ("1.x", "RequestOutput.abort()"),
    ("0.12-runner", "ModelRunnerCpp.session.cancel_request()"),
    ("1.x-runner", "ModelRunnerCpp.executor.cancel_request()"),
])
async def test_self_test_passes_on_each_version(engine_dir: Path, monkeypatch: pytest.MonkeyPatch, version: str,
                                                cancel: str) -> None:
    engine = await loaded(engine_dir, monkeypatch, version, [9, 10, 11, 12, 13, 12, 11, 10, 9])
    report = await selftest.self_test(engine)
    await engine.close()
    assert (report.tokens, report.finish_reason, report.text) == (4, "length", "a b c d")
    assert report.ttft_ms > 0 and report.total_ms >= report.ttft_ms and report.decode_tokens_per_s
    assert report.cancel == cancel and report.close_ms >= 0
    assert report.version == ("0.12.0" if version.startswith("0.12") else "1.0.0")
    summary = report.summary()
    assert "4 tokens 'a b c d', finish length" in summary and f"cancel: {cancel}" in summary


async def test_self_test_sees_a_stop(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await loaded(engine_dir, monkeypatch, "0.12", [9, 2])  # 2: </s>, the end id
    report = await selftest.self_test(engine)
    await engine.close()
    assert (report.tokens, report.finish_reason, report.decode_tokens_per_s) == (1, "stop", None)


def test_doctor_line_runs_the_test(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake(monkeypatch, "1.x")
    set_script(monkeypatch, [9, 10])
    target = selftest.plan(LLMSettings(engine=EngineKind.trtllm, model_path=engine_dir))
    assert isinstance(target, TrtLlmConfig)
    what, ok, fix = selftest.doctor_line(target)
    assert ok and not fix and what.startswith("TensorRT-LLM self-test: TensorRT-LLM 1.0.0 (llm): 4 tokens")


def test_doctor_line_reports_an_unexpected_output_shape(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An output object without the field the code reads (as 0.12 was without finish_reason): a problem row."""

    @dataclasses.dataclass(slots=True)
    class Strange:
        index: int
        text: str = ""

    class StrangeOutput(RequestOutput012):
        @property
        def outputs(self) -> list[Any]:
            return [Strange(0)]

    class StrangeLLM(LLM012):
        def generate_async(self, prompt: list[int], sampling_params: Any, streaming: bool = False) -> Any:
            super().generate_async(prompt, sampling_params, streaming)
            result = self.results[-1]
            return StrangeOutput(result.request_id, result._seq)

    install_fake(monkeypatch, "0.12")
    monkeypatch.setattr(sys.modules["tensorrt_llm"], "LLM", StrangeLLM)
    target = selftest.plan(LLMSettings(engine=EngineKind.trtllm, model_path=engine_dir))
    assert isinstance(target, TrtLlmConfig)
    what, ok, fix = selftest.doctor_line(target)
    assert not ok and what == "TensorRT-LLM self-test"
    assert fix.startswith("AttributeError:") and "token_ids" in fix and "trt_server/engines/trtllm" in fix


def test_doctor_line_without_tensorrt_llm_says_what_to_install(engine_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    target = selftest.plan(LLMSettings(engine=EngineKind.trtllm, model_path=engine_dir))
    assert isinstance(target, TrtLlmConfig)  # WATUS_LLM_ENGINE=trtllm: a missing library is a finding
    what, ok, fix = selftest.doctor_line(target)
    assert what == "TensorRT-LLM self-test" and not ok
    assert "0.12.0-jetson" in fix and "deploy/jetson/setup.sh" in fix


def test_plan_follows_the_settings(engine_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    skip = selftest.plan(LLMSettings())
    assert skip == selftest.Skip("WATUS_LLM_ENGINE=llamacpp and tensorrt_llm is not installed")
    target = selftest.plan(LLMSettings(engine=EngineKind.trtllm, model_path=engine_dir,
                                       kv_cache_free_gpu_memory_fraction=0.10, context_length=4096))
    assert isinstance(target, TrtLlmConfig)
    assert (target.engine_dir, target.context_length) == (engine_dir, 4096)
    assert target.kv_cache_free_gpu_memory_fraction == selftest.KV_CACHE_FRACTION  # at most 5 %
    install_fake(monkeypatch, "0.12")  # installed, but the server runs llama.cpp
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    skip = selftest.plan(LLMSettings(model_path=gguf))
    assert isinstance(skip, selftest.Skip) and not skip.problem
    assert "WATUS_LLM_MODEL_PATH names no TensorRT-LLM engine directory" in skip.reason
    assert isinstance(selftest.plan(LLMSettings(model_path=engine_dir)), TrtLlmConfig)
    monkeypatch.setenv("WATUS_LLM_CONTEXT_LENGTH", "1")  # below its bound: not testing is a problem
    skip = selftest.settings_plan()
    assert isinstance(skip, selftest.Skip) and skip.problem and "context_length" in skip.reason


def _doctor(monkeypatch: pytest.MonkeyPatch, *args: bool) -> str:
    from watus.cli import ops

    console = Console(width=400, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 (closed with it)
    monkeypatch.setattr(ops, "console", console)
    try:
        ops.doctor(*args)
    finally:
        console.file.close()
    return console.export_text()


def _row(text: str, start: str) -> str:
    rows = [line for line in text.splitlines() if start in line]
    assert len(rows) == 1, text
    return rows[0]


def test_doctor_skips_the_self_test_without_tensorrt_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    monkeypatch.delenv("WATUS_LLM_ENGINE", raising=False)
    row = _row(_doctor(monkeypatch, True), "TensorRT-LLM self-test")
    assert "skipped (WATUS_LLM_ENGINE=llamacpp and tensorrt_llm is not installed)" in row and "ok" in row
    row = _row(_doctor(monkeypatch, False), "TensorRT-LLM self-test")
    assert "skipped (--no-llm-selftest)" in row


def test_doctor_runs_the_self_test_on_the_robot(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake(monkeypatch, "0.12")
    set_script(monkeypatch, [9, 10, 11, 12, 13])
    monkeypatch.setenv("WATUS_LLM_ENGINE", "trtllm")
    monkeypatch.setenv("WATUS_LLM_MODEL_PATH", str(engine_dir))
    row = _row(_doctor(monkeypatch, True), "TensorRT-LLM self-test")
    assert "TensorRT-LLM 0.12.0 (llm): 4 tokens 'a b c d', finish length" in row and "problem" not in row
