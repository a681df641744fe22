"""Schemathesis against the OpenAPI of each of the four processes, each a real server with its real models.

Every operation a service declares gets a small, derandomized budget of valid and invalid requests
(`tests.fuzz_support`): no 5xx but a 503 with the error body, OpenAI-style error bodies on every
4xx/5xx (the agent's too), bodies that conform to the declared response schemas, and the service
still healthy afterwards. Nothing is excluded: event streams (chat with `stream`, `/v1/scene/stream`,
`/v1/events`, the dashboard's events) are cut by schemathesis after `max_stream_events` events, chat
and completions are held to a few tokens, agent turns to a short text. `WATUS_FUZZ_EXAMPLES=200` hunts
longer; `WATUS_FUZZ_STRICT=1` also holds every service to the statuses and content types it declares.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from pydantic import JsonValue
from schemathesis import Case

from tests.fuzz_support import DEFAULT_EXAMPLES, Report, call_checked, fuzz
from tests.helpers import free_port, run_service
from vision.samples import sample_image, write_demo_video

pytestmark = pytest.mark.slow

#: Tokens a fuzzed chat or completion request may ask for; the 135M model writes these in well under a second.
MAX_TOKENS = 8
#: Choices (`n`) a fuzzed request may ask for.
MAX_CHOICES = 2
#: Characters of a fuzzed agent turn.
MAX_TEXT = 120
#: Examples per generation mode of the agent's `POST /v1/chat`.
CHAT_EXAMPLES = max(1, DEFAULT_EXAMPLES // 2)


def _assert_clean(report: Report, url: str) -> None:
    print(f"fuzzed {url}:\n{report.summary()}")
    assert report.calls and all(report.calls.values()), report.summary()
    assert not report.failures, "\n\n".join(report.failures)
    assert httpx.get(url + "/health", timeout=10).status_code == 200, "the service is not healthy after fuzzing"


def _small(value: JsonValue, cap: int) -> JsonValue:
    """`value` held to `cap` when it is a valid positive count; anything else is left for the server to refuse."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**31:
        return min(value, cap)
    return value


def bound_llm(case: Case) -> None:
    """Keep generation short: a few tokens and at most two choices per request."""
    body = case.body
    if not isinstance(body, dict):
        return
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = MAX_TOKENS
    for key in ("max_tokens", "max_completion_tokens"):
        if key in body:
            body[key] = _small(body[key], MAX_TOKENS)
    if "n" in body:
        body["n"] = _small(body["n"], MAX_CHOICES)


def test_fuzz_llm(llm_url: str) -> None:
    _assert_clean(fuzz(llm_url, bound=bound_llm, max_stream_events=3), llm_url)


@pytest.fixture(scope="module")
def vision_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz-vision")
    try:
        video = write_demo_video(tmp / "camera.avi", frames_per_part=10, fps=10)
    except FileNotFoundError as e:
        pytest.fail(str(e))
    port = free_port()
    env = {"WATUS_VISION_PORT": str(port), "WATUS_VISION_SOURCE": str(video), "WATUS_VISION_SOURCE_FPS": "5",
           "WATUS_VISION_THREADS": "1", "WATUS_VISION_FACE_EVERY_N": "5"}
    with run_service("vision", env, port, tmp / "vision.log") as url:
        deadline = time.monotonic() + 30
        while httpx.get(url + "/v1/scene").status_code != 200:
            assert time.monotonic() < deadline, "no scene 30 s after the service became healthy"
            time.sleep(0.05)
        yield url


def _encoded(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return bytes(buf.tobytes())


def test_fuzz_vision(vision_url: str) -> None:
    # Vision declares every status and content type it sends: held to them.
    _assert_clean(fuzz(vision_url, max_stream_events=1, strict=True), vision_url)


def test_detect_real_and_odd_images(vision_url: str) -> None:
    """Images random bytes never make: a real photo, raw and as a form, and very thin ones (once a 500)."""
    photo = sample_image("bus.jpg").read_bytes()
    noise = np.random.default_rng(0).integers(0, 255, (5000, 3, 3), np.uint8)
    uploads = [("image/jpeg", photo), ("image/png", _encoded(".png", noise)),
               ("image/jpeg", _encoded(".jpg", noise.transpose(1, 0, 2).copy())),
               ("image/webp", _encoded(".webp", noise[:2000])), ("image/bmp", _encoded(".bmp", noise[:1, :1]))]
    for media_type, data in uploads:
        r = call_checked(vision_url, "POST", "/v1/detect", strict=True, body=data, media_type=media_type)
        assert r.status_code == 200, (media_type, r.status_code, r.content[:300])
    r = call_checked(vision_url, "POST", "/v1/detect", strict=True, body={"file": photo},
                     media_type="multipart/form-data")
    assert r.status_code == 200 and any(p["label"] == "person" for p in r.json()["objects"]), r.content[:300]


@pytest.fixture(scope="module")
def audio_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz-audio")
    port = free_port()
    # Short texts and a short speaking queue: speech stays cheap, and a full queue (429) comes sooner.
    env = {"WATUS_AUDIO_PORT": str(port), "WATUS_AUDIO_MIC_BACKEND": "none", "WATUS_AUDIO_SPEAKER_BACKEND": "wav",
           "WATUS_AUDIO_SPEAKER_WAV_PATH": str(tmp / "speaker.wav"), "WATUS_AUDIO_MAX_UPLOAD_BYTES": str(2**20),
           "WATUS_AUDIO_TTS_MAX_CHARS": "200", "WATUS_AUDIO_SPEAK_QUEUE_SIZE": "4",
           "WATUS_AUDIO_ASR_THREADS": "1", "WATUS_AUDIO_TTS_THREADS": "1"}
    with run_service("audio", env, port, tmp / "audio.log") as url:
        yield url


def test_fuzz_audio(audio_url: str) -> None:
    _assert_clean(fuzz(audio_url, max_stream_events=1), audio_url)


@pytest.fixture(scope="module")
def agent_url(llm_url: str, vision_url: str, audio_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-agent")
    port = free_port()
    env = {"WATUS_AGENT_PORT": str(port), "WATUS_AGENT_LLM_URL": llm_url, "WATUS_AGENT_VISION_URL": vision_url,
           "WATUS_AGENT_AUDIO_URL": audio_url, "WATUS_AGENT_TURN_LOG": str(tmp / "turns.jsonl"),
           "WATUS_AGENT_TEMPERATURE": "0", "WATUS_AGENT_MAX_TOKENS": str(MAX_TOKENS * 2)}
    with run_service("watus", env, port, tmp / "agent.log") as url:
        yield url


def bound_agent(case: Case) -> None:
    """Keep a turn's prompt short: the prefill of thousands of characters is seconds on a small CPU."""
    body = case.body
    text = body.get("text") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(text, str):
        body["text"] = text[:MAX_TEXT]


def test_fuzz_agent(agent_url: str) -> None:
    # Each accepted chat is a whole LLM turn, seconds on a busy 2-core machine: its parsing and errors are what is
    # fuzzed here (the LLM server has its own test), so it gets the smaller budget.
    report = fuzz(agent_url, bound=bound_agent, max_stream_events=1, examples={"POST /v1/chat": CHAT_EXAMPLES})
    _assert_clean(report, agent_url)
