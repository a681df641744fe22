"""The one security model of the four processes (`watus.core.security`), each a real process on 127.0.0.1.

For every service: 401 without or with the wrong key, 200 with it, `/health` and `/metrics` open; 413
with the error body for an oversized body with and without Content-Length; a refusal to listen off
loopback without a key, and a start there when it is allowed. Then the agent's dashboard through its
cookie, and a text turn through an agent whose every peer requires its own key. The pieces themselves
(key resolution, the key check, the body limit, the catch-all 500) are in `test_security_units.py`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, free_port, service_process
from vision.samples import sample_image

pytestmark = pytest.mark.slow

GLOBAL_KEY = "global-key-0123"
VISION_KEY = "vision-key-4567"
AUDIO_KEY = "audio-key-89ab"
AGENT_KEY = "agent-key-cdef"
#: Small limits, so an oversized body is cheap to send.
SMALL_BODY = 16 * 1024
SMALL_UPLOAD = 64 * 1024
#: What the services add to an upload limit for the multipart framing around the file.
FORM_SLACK = 64 * 1024


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def _pieces(data: bytes, piece: int = 8192) -> Iterator[bytes]:
    """`data` sent chunked: httpx gives a generator body no Content-Length."""
    for start in range(0, len(data), piece):
        yield data[start:start + piece]


def _guard_setting(name: str) -> bool:
    """A key or ALLOW_INSECURE setting a developer's environment may hold; the tests set their own."""
    return name.startswith("WATUS_") and name.endswith(("API_KEY", "ALLOW_INSECURE"))


def _form_upload(size: int) -> bytes:
    """A well-formed multipart body whose `file` part has `size` bytes."""
    head = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n")
    return head + b"\0" * size + b"\r\n--x--\r\n"


def _env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any key or ALLOW_INSECURE a developer may have set, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if not _guard_setting(k)}, **extra}


@contextmanager
def _process(module: str, extra: dict[str, str], port: int, log_path: Path, *, healthy: bool = True,
             timeout: float = 300.0) -> Iterator[str]:
    """`python -m module` on `port` without the developer's keys; waits until /health is 200 (`healthy`)
    or answers at all."""
    with service_process(module, extra, port, log_path, healthy=healthy, timeout=timeout,
                         base_env=_env({})) as (url, _):
        yield url


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The LLM server with the one global key."""
    port = free_port()
    env = {"WATUS_LLM_PORT": str(port), "WATUS_API_KEY": GLOBAL_KEY, "WATUS_LLM_MAX_BODY_BYTES": str(SMALL_BODY),
           "WATUS_LLM_THREADS": "2", "WATUS_LLM_MAX_CONCURRENT": "1", "WATUS_LLM_WARMUP": "false"}
    with _process("trt_server", env, port, tmp_path_factory.mktemp("sec-llm") / "llm.log") as url:
        yield url


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Vision with its own key over the global one, and a small upload limit."""
    tmp = tmp_path_factory.mktemp("sec-vision")
    (tmp / "camera").mkdir()
    shutil.copy(sample_image("bus.jpg"), tmp / "camera" / "bus.jpg")
    port = free_port()
    env = {"WATUS_VISION_PORT": str(port), "WATUS_API_KEY": GLOBAL_KEY, "WATUS_VISION_API_KEY": VISION_KEY,
           "WATUS_VISION_SOURCE": str(tmp / "camera"), "WATUS_VISION_LOOP": "true", "WATUS_VISION_SOURCE_FPS": "2",
           "WATUS_VISION_FACES": "false", "WATUS_VISION_THREADS": "1",
           "WATUS_VISION_MAX_UPLOAD_BYTES": str(SMALL_UPLOAD)}
    with _process("vision", env, port, tmp / "vision.log") as url:
        deadline = time.monotonic() + 60
        while httpx.get(url + "/v1/scene", headers={"X-API-Key": VISION_KEY}).status_code != 200:
            assert time.monotonic() < deadline, "no scene 60 s after vision became healthy"
            time.sleep(0.2)
        yield url


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Audio with its own key (no global one) and small limits."""
    tmp = tmp_path_factory.mktemp("sec-audio")
    port = free_port()
    env = {"WATUS_AUDIO_PORT": str(port), "WATUS_AUDIO_API_KEY": AUDIO_KEY, "WATUS_AUDIO_MIC_BACKEND": "none",
           "WATUS_AUDIO_SPEAKER_BACKEND": "null", "WATUS_AUDIO_MAX_BODY_BYTES": str(SMALL_BODY),
           "WATUS_AUDIO_MAX_UPLOAD_BYTES": str(SMALL_UPLOAD), "WATUS_AUDIO_ASR_THREADS": "1",
           "WATUS_AUDIO_TTS_THREADS": "1"}
    with _process("audio", env, port, tmp / "audio.log") as url:
        yield url


@pytest.fixture(scope="module")
def agent(llm: str, vision: str, audio: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The agent as an env file would configure it: one global key, vision's and audio's own, the agent's own."""
    tmp = tmp_path_factory.mktemp("sec-agent")
    port = free_port()
    env = {"WATUS_AGENT_PORT": str(port), "WATUS_API_KEY": GLOBAL_KEY, "WATUS_VISION_API_KEY": VISION_KEY,
           "WATUS_AUDIO_API_KEY": AUDIO_KEY, "WATUS_AGENT_API_KEY": AGENT_KEY, "WATUS_AGENT_LLM_URL": llm,
           "WATUS_AGENT_VISION_URL": vision, "WATUS_AGENT_AUDIO_URL": audio,
           "WATUS_AGENT_TURN_LOG": str(tmp / "turns.jsonl"), "WATUS_AGENT_TEMPERATURE": "0",
           "WATUS_AGENT_MAX_TOKENS": "16", "WATUS_AGENT_MAX_BODY_BYTES": str(SMALL_BODY)}
    with _process("watus", env, port, tmp / "agent.log") as url:
        yield url


#: Per service: its fixture, its key, and a GET behind the key that answers 200 once it is ready.
SERVICES = {"llm": ("llm", GLOBAL_KEY, "/v1/models"), "vision": ("vision", VISION_KEY, "/v1/scene"),
            "audio": ("audio", AUDIO_KEY, "/v1/voices"), "agent": ("agent", AGENT_KEY, "/")}


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_endpoint_but_health_and_metrics_needs_the_key(service: str, request: pytest.FixtureRequest) -> None:
    fixture, key, path = SERVICES[service]
    url: str = request.getfixturevalue(fixture)
    missing = httpx.get(url + path, timeout=30)
    err = _error(missing, 401)
    assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    _error(httpx.get(url + path, headers={"Authorization": f"Bearer {key}-wrong"}, timeout=30), 401)
    if service != "llm":  # the global key is not theirs: each has its own
        _error(httpx.get(url + path, headers={"Authorization": f"Bearer {GLOBAL_KEY}"}, timeout=30), 401)
    assert httpx.get(url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code == 200
    assert httpx.get(url + path, headers={"X-API-Key": key}, timeout=30).status_code == 200
    _error(httpx.get(url + "/openapi.json", timeout=30), 401)
    assert httpx.get(url + "/health", timeout=30).status_code == 200
    metrics = httpx.get(url + "/metrics", timeout=30)
    assert metrics.status_code == 200 and "# TYPE" in metrics.text


#: Per service: a request over its limit, as (path, content type, body), and the error's code.
OVERSIZED = {
    "llm": ("/v1/chat/completions", "application/json", b"x" * (SMALL_BODY + 1), "request_too_large"),
    "vision": ("/v1/detect", "application/octet-stream", b"x" * (SMALL_UPLOAD + FORM_SLACK + 1), "image_too_large"),
    "audio": ("/v1/audio/speech", "application/json", b"x" * (SMALL_BODY + 1), "request_too_large"),
    "audio-upload": ("/v1/audio/transcriptions", "multipart/form-data; boundary=x",
                     _form_upload(SMALL_UPLOAD + FORM_SLACK), "file_too_large"),
    "agent": ("/v1/chat", "application/json", b"x" * (SMALL_BODY + 1), "request_too_large"),
}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("case", list(OVERSIZED))
def test_an_oversized_body_is_a_413_with_the_error_body(case: str, chunked: bool,
                                                        request: pytest.FixtureRequest) -> None:
    fixture, key, _ = SERVICES[case.split("-")[0]]
    url: str = request.getfixturevalue(fixture)
    path, content_type, data, code = OVERSIZED[case]
    body: Any = _pieces(data) if chunked else data
    r = httpx.post(url + path, content=body, timeout=60,
                   headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    err = _error(r, 413)
    assert err["code"] == code, err
    # And the service answers the next request as before.
    assert httpx.get(url + "/health", timeout=30).status_code == 200


def test_the_agent_with_a_key_talks_to_peers_with_keys(agent: str) -> None:
    """A text turn through the agent's API: the LLM (global key) answers and vision (its own key) gave the scene;
    the audio event stream (audio's key) is connected."""
    auth = {"Authorization": f"Bearer {AGENT_KEY}"}
    deadline = time.monotonic() + 60
    while (health := httpx.get(agent + "/health", timeout=30).json())["audio_events"] != "connected":
        assert time.monotonic() < deadline, health
        time.sleep(0.5)
    assert health["llm"]["ok"] and health["vision"]["ok"] and health["audio"]["ok"], health
    r = httpx.post(agent + "/v1/chat", json={"text": "Say hello.", "new_session": True}, headers=auth, timeout=180)
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["reply"].strip() and body["vision_error"] is None and body["scene"] is not None, body
    frame = httpx.get(agent + "/v1/dashboard/frame.jpg", headers=auth, timeout=30)  # proxied with vision's key
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"


def test_the_dashboard_works_with_a_key_through_its_cookie(agent: str) -> None:
    with httpx.Client(base_url=agent, timeout=30) as browser:
        _error(browser.get("/v1/dashboard/events"), 401)
        page = browser.get("/", params={"key": AGENT_KEY})
        assert page.status_code == 200 and "<title>Watus" in page.text
        assert "HttpOnly" in page.headers["set-cookie"]
        assert browser.get("/static/dashboard.js").status_code == 200
        # What the page's EventSource does: same origin, the cookie and nothing else.
        with browser.stream("GET", "/v1/dashboard/events") as events:
            assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
            assert next(events.iter_lines()) == "retry: 1000"
        assert browser.post("/v1/session/new").status_code == 200


#: Per process: its module and its env prefix.
MODULES = {"llm": ("trt_server", "WATUS_LLM_"), "vision": ("vision", "WATUS_VISION_"),
           "audio": ("audio", "WATUS_AUDIO_"), "agent": ("watus", "WATUS_AGENT_")}


@pytest.mark.parametrize("service", list(MODULES))
def test_off_loopback_without_a_key_it_refuses_to_start(service: str) -> None:
    module, prefix = MODULES[service]
    env = _env({f"{prefix}HOST": "0.0.0.0", f"{prefix}PORT": str(free_port())})
    proc = subprocess.run([sys.executable, "-m", module], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "refusing to listen" in line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "0.0.0.0" in lines[0] and f"{prefix}API_KEY" in lines[0] and f"{prefix}ALLOW_INSECURE=true" in lines[0]


#: Per process: the setting that lets it listen open (its own for two, the global one for the other two).
ALLOW = {"llm": "WATUS_LLM_ALLOW_INSECURE", "vision": "WATUS_ALLOW_INSECURE", "audio": "WATUS_AUDIO_ALLOW_INSECURE",
         "agent": "WATUS_ALLOW_INSECURE"}


@pytest.mark.parametrize("service", list(MODULES))
def test_allow_insecure_lets_it_listen_on_every_address(service: str, tmp_path: Path) -> None:
    module, prefix = MODULES[service]
    port = free_port()
    env = {f"{prefix}HOST": "0.0.0.0", f"{prefix}PORT": str(port), ALLOW[service]: "true",
           "WATUS_LLM_WARMUP": "false", "WATUS_VISION_SOURCE": str(sample_image("bus.jpg").parent),
           "WATUS_AUDIO_MIC_BACKEND": "none", "WATUS_AUDIO_SPEAKER_BACKEND": "null",
           "WATUS_AGENT_TURN_LOG": str(tmp_path / "turns.jsonl")}
    log = tmp_path / f"{service}.log"
    with _process(module, env, port, log, healthy=False, timeout=180) as url:
        assert httpx.get(url + "/health", timeout=30).status_code in (200, 503)  # up: loading or ready
    assert "without an API key" in log.read_text(errors="replace")
