"""Parallel streams, the bounded queue (503 + Retry-After), and cancellation on disconnect."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers import free_port, run_service

HELLO = [{"role": "user", "content": "Tell me a long story about a robot."}]


def _gauge(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert match, name
    return float(match.group(1))


async def test_parallel_streams_all_complete(llm_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=llm_url + "/v1", api_key="x", max_retries=0)

    async def one(i: int) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": f"Count to {i + 3}."}], max_tokens=12,
            stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
        text, completion = "", 0
        async for c in stream:
            if c.choices:
                text += c.choices[0].delta.content or ""
            if c.usage:
                completion = c.usage.completion_tokens
        return text, completion

    # 2 slots and a queue of 2 on this server: four streams all finish.
    results = await asyncio.gather(*(one(i) for i in range(4)))
    assert all(text and completion == 12 for text, completion in results), results


async def test_requests_with_several_choices_share_the_slots(llm_url: str) -> None:
    """Two n=2 streams and a plain one on 2 slots: each n=2 takes both slots at once, in arrival order."""
    client = openai.AsyncOpenAI(base_url=llm_url + "/v1", api_key="x", max_retries=0)

    async def one(n: int) -> dict[int, int]:
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Tell me a long story about a robot."}],
            max_tokens=10, n=n, stream=True, extra_body={"ignore_eos": True}, stream_options={"include_usage": True},
        )
        pieces: dict[int, int] = {}
        async for c in stream:
            for choice in c.choices:
                pieces[choice.index] = pieces.get(choice.index, 0) + bool(choice.delta.content)
            if c.usage:
                assert c.usage.completion_tokens == 10 * n
        return pieces

    results = await asyncio.gather(one(2), one(2), one(1))
    assert [sorted(r) for r in results] == [[0, 1], [0, 1], [0]]
    assert all(count > 1 for r in results for count in r.values())


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One slot and no waiting room: the second concurrent request must be refused."""
    port = free_port()
    env = {"WATUS_LLM_PORT": str(port), "WATUS_LLM_MAX_CONCURRENT": "1", "WATUS_LLM_QUEUE_SIZE": "0",
           "WATUS_LLM_QUEUE_TIMEOUT_S": "2", "WATUS_LLM_WARMUP": "false"}
    log: Path = tmp_path_factory.mktemp("tiny") / "server.log"
    with run_service("trt_server", env, port, log) as url:
        yield url


def test_queue_overflow_gives_503_with_retry_after(tiny_server: str) -> None:
    long_body = {"messages": HELLO, "max_tokens": 400, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", tiny_server + "/v1/chat/completions",
                                                       json=long_body) as busy:
        assert busy.status_code == 200
        lines = busy.iter_lines()  # keep a reference: a dropped iterator closes the response
        next(lines)  # the slot is taken and generating
        r = http.post(tiny_server + "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2})
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        err = r.json()["error"]
        assert err["type"] == "server_overloaded" and err["code"] == "queue_full"
        with pytest.raises(openai.APIStatusError) as info:
            openai.OpenAI(base_url=tiny_server + "/v1", api_key="x", max_retries=0).chat.completions.create(
                model="default", messages=HELLO, max_tokens=2)  # type: ignore[arg-type]
        assert info.value.status_code == 503
    assert "watus_llm_rejected_total 2.0" in httpx.get(tiny_server + "/metrics").text


def test_client_disconnect_cancels_generation(tiny_server: str) -> None:
    """A stream dropped after a few tokens frees its slot long before its 1500 tokens would be done."""
    body = {"messages": HELLO, "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", tiny_server + "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            for _ in range(6):
                next(lines)
        # The slot is free again at once: the next request is admitted (no 503) and finishes quickly.
        start = time.monotonic()
        while _gauge(tiny_server, "watus_llm_requests_running") != 0:
            assert time.monotonic() - start < 5, "generation was not cancelled"
            time.sleep(0.05)
        ok = http.post(tiny_server + "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4})
        assert ok.status_code == 200
    text = httpx.get(tiny_server + "/metrics").text
    cancelled = re.search(r'watus_llm_completion_tokens_total ([0-9.]+)', text)
    assert cancelled and float(cancelled.group(1)) < 1500


def test_non_streaming_disconnect_cancels_too(tiny_server: str) -> None:
    body = {"messages": HELLO, "max_tokens": 1500, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(tiny_server + "/v1/chat/completions", json=body, timeout=0.8)
    start = time.monotonic()
    while _gauge(tiny_server, "watus_llm_requests_running") != 0:
        assert time.monotonic() - start < 5, "generation was not cancelled"
        time.sleep(0.05)


def test_more_choices_than_slots_take_turns(tiny_server: str) -> None:
    """n=3 on one slot: the choices run one after the other on the request's slot, none refused."""
    r = httpx.post(tiny_server + "/v1/chat/completions", timeout=60, json={
        "messages": HELLO, "max_tokens": 5, "n": 3, "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in body["choices"]}) == 1  # greedy: the same answer thrice
    assert body["usage"]["completion_tokens"] == 15
    assert _gauge(tiny_server, "watus_llm_requests_running") == 0


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_cancels_every_choice(tiny_server: str, stream: bool) -> None:
    """A client that leaves an n=2 request stops both choices (the running one and the one waiting its turn)."""
    body = {"messages": HELLO, "max_tokens": 1500, "n": 2, "stream": stream, "ignore_eos": True}
    before = _counter(tiny_server, "watus_llm_completion_tokens_total")
    if stream:
        with httpx.Client(timeout=60) as http, http.stream("POST", tiny_server + "/v1/chat/completions",
                                                           json=body) as r:
            lines = r.iter_lines()
            for _ in range(6):
                next(lines)
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(tiny_server + "/v1/chat/completions", json=body, timeout=0.8)
    start = time.monotonic()
    while _gauge(tiny_server, "watus_llm_requests_running") != 0:
        assert time.monotonic() - start < 5, "generation was not cancelled"
        time.sleep(0.05)
    ok = httpx.post(tiny_server + "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4}, timeout=30)
    assert ok.status_code == 200
    assert _counter(tiny_server, "watus_llm_completion_tokens_total") - before < 1500


def _counter(url: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", httpx.get(url + "/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0
