"""The shared foundation in `watus/core`: settings reference, logging, metrics, the turn id."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from trt_server.settings import EngineKind, LLMSettings
from watus.core import metrics as m
from watus.core.config import settings_reference
from watus.core.logs import setup_logging
from watus.core.timing import clean_turn_id, new_turn_id
from watus.core.wire.audio import SayRequest


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
    ids = {new_turn_id() for _ in range(100)}
    assert len(ids) == 100 and all(clean_turn_id(t) == t for t in ids)
    assert clean_turn_id("turn:1.a_b-C") == "turn:1.a_b-C" and clean_turn_id("x" * 64) == "x" * 64
    for bad in ("bad id\nwith newline", "t1\r\nX-Injected: 1", "x" * 65, "", "ł", None):
        assert clean_turn_id(bad) is None, bad
    # The wire contracts hold the same rule: a say with a bad turn id is refused, not passed on.
    assert SayRequest(text="hi", turn_id="say-1").turn_id == "say-1"
    with pytest.raises(ValidationError, match="turn_id"):
        SayRequest(text="hi", turn_id="bad id")


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
