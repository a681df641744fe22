"""The shared foundation in `watus/`: settings reference, logging, metrics, spans, the turn header."""

from __future__ import annotations

import json
import logging
import time

import pytest

from trt_server.settings import EngineKind, LLMSettings
from watus.core import metrics as m
from watus.core.config import settings_reference
from watus.core.logs import setup_logging
from watus.core.timing import TURN_HEADER, SpanRecorder, clean_turn_id, new_turn_id


def test_settings_read_env_with_prefix_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATUS_LLM_PORT", "9001")
    monkeypatch.setenv("WATUS_LLM_ENGINE", "trtllm")
    s = LLMSettings()
    assert s.port == 9001 and s.engine is EngineKind.trtllm and s.host == "127.0.0.1"
    monkeypatch.setenv("WATUS_LLM_PORT", "70000")
    with pytest.raises(ValueError, match="port"):
        LLMSettings()


def test_settings_reference_lists_every_field_with_env_and_default() -> None:
    rows = {r["env"]: r for r in settings_reference(LLMSettings)}
    assert set(rows) == {"WATUS_LLM_" + name.upper() for name in LLMSettings.model_fields}
    assert rows["WATUS_LLM_PORT"]["default"] == 8080
    assert rows["WATUS_LLM_THREADS"]["default"] == "(computed)"
    assert all(r["description"] for r in rows.values())


def test_turn_ids_are_checked_before_trusted() -> None:
    assert TURN_HEADER == "X-Watus-Turn"
    tid = new_turn_id()
    assert clean_turn_id(tid) == tid
    assert clean_turn_id("bad id\nwith newline") is None
    assert clean_turn_id("x" * 65) is None
    assert clean_turn_id(None) is None


def test_span_recorder_uses_one_monotonic_clock() -> None:
    rec = SpanRecorder(turn_id="t1")
    start = rec.mark("t0")
    with rec.span("work"):
        time.sleep(0.01)
    rec.mark("t1")
    (span,) = rec.spans
    assert span.name == "work" and span.ms >= 9.0 and span.start_ns >= start
    between = rec.ms_between("t0", "t1")
    assert between is not None and between >= span.ms
    assert rec.ms_between("t0", "missing") is None
    assert json.loads(json.dumps(rec.as_dict()))["turn_id"] == "t1"


def test_json_logging(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", json_lines=True)
    logging.getLogger("watus.test").info("hello %s", "robot")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["msg"] == "hello robot" and record["level"] == "INFO" and record["logger"] == "watus.test"
    setup_logging("WARNING")


def test_metrics_registry_is_per_app() -> None:
    a, b = m.new_registry(), m.new_registry()
    h = m.latency_histogram("watus_x_seconds", "x", a)
    m.latency_histogram("watus_x_seconds", "x", b)  # no clash across registries
    h.observe(0.02)
    body, content_type = m.render(a)
    assert b'watus_x_seconds_bucket{le="0.025"} 1.0' in body
    assert content_type.startswith("text/plain")
    assert b"watus_x_seconds_count 0.0" in m.render(b)[0]
