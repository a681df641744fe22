"""The agent process with the real LLM server: text turns, memory sessions, health of its peers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, run_service


@pytest.fixture(scope="module")
def agent_url(llm_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    tmp: Path = tmp_path_factory.mktemp("agent")
    env = {"WATUS_AGENT_PORT": str(port), "WATUS_AGENT_LLM_URL": llm_url,
           # Nothing listens on these: the agent must say it cannot see, and keep working.
           "WATUS_AGENT_VISION_URL": f"http://127.0.0.1:{free_port()}",
           "WATUS_AGENT_AUDIO_URL": f"http://127.0.0.1:{free_port()}",
           "WATUS_AGENT_TURN_LOG": str(tmp / "turns.jsonl"), "WATUS_AGENT_TEMPERATURE": "0"}
    with run_service("watus", env, port, tmp / "agent.log") as url:
        yield url


def test_health_reports_peers(agent_url: str) -> None:
    body = httpx.get(agent_url + "/health", timeout=10).json()
    assert body["status"] == "ok"
    assert body["llm"]["ok"] is True
    assert body["vision"]["ok"] is False and "down" in body["vision"]["status"]
    assert body["audio"]["ok"] is False
    assert body["audio_events"] != "connected"


def test_text_turn_with_vision_down(agent_url: str) -> None:
    r = httpx.post(agent_url + "/v1/chat", json={"text": "Hello, who are you?", "new_session": True}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reply"].strip()
    assert body["scene"] is None and "not reachable" in body["vision_error"]


def test_streamed_text_turn(agent_url: str) -> None:
    with httpx.stream("POST", agent_url + "/v1/chat", json={"text": "Say something nice.", "stream": True},
                      timeout=60) as r:
        pieces = [p for p in r.iter_text() if p]
    assert len(pieces) > 1 and "".join(pieces).strip()


def test_bad_request_is_a_4xx(agent_url: str) -> None:
    r = httpx.post(agent_url + "/v1/chat", json={"text": ""}, timeout=10)
    # The same OpenAI-style error body as the other services.
    assert r.status_code == 400 and r.json()["error"]["param"] == "text", r.text
    assert httpx.post(agent_url + "/v1/session/new", timeout=10).json()["session"]


def test_blank_text_is_a_400_like_the_turns_api(agent_url: str) -> None:
    r = httpx.post(agent_url + "/v1/chat", json={"text": "   "}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_input", r.text


def test_llm_down_is_a_503_with_retry_after_and_a_marked_stream(tmp_path: Path) -> None:
    port = free_port()
    env = {"WATUS_AGENT_PORT": str(port), "WATUS_AGENT_LLM_URL": f"http://127.0.0.1:{free_port()}",
           "WATUS_AGENT_VISION_URL": f"http://127.0.0.1:{free_port()}",
           "WATUS_AGENT_AUDIO_URL": f"http://127.0.0.1:{free_port()}",
           "WATUS_AGENT_TURN_LOG": str(tmp_path / "turns.jsonl"), "WATUS_AGENT_LLM_TIMEOUT_S": "5"}
    with run_service("watus", env, port, tmp_path / "agent.log") as url:
        r = httpx.post(url + "/v1/chat", json={"text": "hi"}, timeout=60)
        assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
        assert r.json()["error"]["code"] == "llm_unavailable"
        streamed = httpx.post(url + "/v1/chat", json={"text": "hi", "stream": True}, timeout=60)
        assert streamed.status_code == 200 and "[error: the LLM failed" in streamed.text, streamed.text
        assert httpx.get(url + "/health", timeout=10).status_code in (200, 503)  # still serving
