"""The LLM half of `watus bench load`: a burst of streaming chat requests against a real `trt_server`.

The server runs with its own admission settings (slots, queue, queue timeout: `trt_server.admission`),
so a burst larger than slots + queue must split into streams that are admitted and complete with valid
SSE, and requests refused at once with 503 + `Retry-After` + an OpenAI-style error body. Anything else
(another status, a broken or malformed stream, a 503 that took the queue timeout) is a failure.

Meanwhile a thread polls `/health` from a raw keep-alive socket: a server whose event loop is blocked
by generation would answer it late, which is what the supervisor (`watus up`, systemd) would then
take for a hung process. Single requests before and after the burst show that the server recovers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from openai.types.chat import ChatCompletionChunk
from pydantic import ValidationError

from watus.bench import procs
from watus.bench.load_report import LLMLoadResult, LoadConfig, StreamResult
from watus.bench.vision_poll import RawHttpClient
from watus.bench.vision_run import OtherCpu

log = logging.getLogger(__name__)

#: The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
ERROR_KEYS = frozenset({"message", "type", "param", "code"})


class SseCheck:
    """Checks one chat stream line by line as it arrives: every `data:` a `chat.completion.chunk`, then
    `data: [DONE]` and nothing after it. Records the first content's time (TTFT) and the usage."""

    def __init__(self, start: float) -> None:
        self._start = start
        self.error: str | None = None
        self.done = False
        self.finished = False
        self.chunks = 0
        self.ttft_ms: float | None = None
        self.completion_tokens: int | None = None

    def feed(self, line: str, t: float) -> None:
        if self.error is not None or not line or line.startswith(":"):  # blank: end of event; ':' a comment
            return
        if not line.startswith("data:"):
            self.error = f"not an SSE data line: {line[:60]!r}"
            return
        payload = line[5:].removeprefix(" ")
        if self.done:
            self.error = "data after [DONE]"
        elif payload == "[DONE]":
            self.done = True
        else:
            self._chunk(payload, t)

    def _chunk(self, payload: str, t: float) -> None:
        try:
            chunk = ChatCompletionChunk.model_validate_json(payload)
        except ValidationError:
            self.error = f"not a chat.completion.chunk: {payload[:80]}"
            return
        self.chunks += 1
        if self.ttft_ms is None and any(c.delta.content for c in chunk.choices):
            self.ttft_ms = (t - self._start) * 1e3
        if any(c.finish_reason for c in chunk.choices):
            self.finished = True
        if chunk.usage is not None:
            self.completion_tokens = chunk.usage.completion_tokens

    def result(self, end: float) -> StreamResult:
        """The stream's outcome once its body ended at `end`."""
        error = self.error
        if error is None and not self.done:
            error = "stream ended without data: [DONE]"
        if error is None and not self.finished:
            error = "no chunk with a finish_reason"
        if error is None and self.ttft_ms is None:
            error = "no content"
        return StreamResult("failed" if error else "admitted", 200, (end - self._start) * 1e3, ttft_ms=self.ttft_ms,
                            chunks=self.chunks, completion_tokens=self.completion_tokens, error=error)


def check_rejection(status: int, headers: Mapping[str, str], body: bytes, ms: float) -> StreamResult:
    """A 503 is a rejection only with a positive integer `Retry-After` and an OpenAI-style error body."""
    retry = headers.get("retry-after")
    error: str | None = None
    if retry is None or not retry.isdigit() or int(retry) < 1:
        error = f"503 with Retry-After {retry!r}"
    else:
        try:
            err = json.loads(body)["error"]
            if not isinstance(err, dict) or not ERROR_KEYS.issubset(err) or not isinstance(err["message"], str):
                error = f"503 body is not an OpenAI error: {body[:80]!r}"
        except (ValueError, KeyError, TypeError):
            error = f"503 body is not an OpenAI error: {body[:80]!r}"
    return StreamResult("failed" if error else "rejected", status, ms, retry_after=retry, error=error)


def chat_body(i: int, max_tokens: int) -> dict[str, Any]:
    """Request i of a run, a fixed length. The number comes first, so every request reuses the same
    cached prefix (the chat template's) and no more: singles before and after the burst are alike."""
    return {"model": "default", "messages": [{"role": "user", "content": f"{i}. Tell me a story about a robot."}],
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True},
            "ignore_eos": True, "temperature": 0.0}


async def one_stream(client: httpx.AsyncClient, body: dict[str, Any], headers: Mapping[str, str]) -> StreamResult:
    """Send one streaming chat request and classify what came back."""
    start = time.perf_counter()

    def ms() -> float:
        return (time.perf_counter() - start) * 1e3

    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=dict(headers)) as r:
            if r.status_code == 503:
                raw = await r.aread()
                return check_rejection(r.status_code, r.headers, raw, ms())
            if r.status_code != 200:
                raw = await r.aread()
                return StreamResult("failed", r.status_code, ms(), error=f"HTTP {r.status_code}: {raw[:80]!r}")
            if not r.headers.get("content-type", "").startswith("text/event-stream"):
                return StreamResult("failed", 200, ms(), error=f"content-type {r.headers.get('content-type')}")
            check = SseCheck(start)
            async for line in r.aiter_lines():
                check.feed(line, time.perf_counter())
            return check.result(time.perf_counter())
    except httpx.HTTPError as e:
        return StreamResult("failed", None, ms(), error=f"broken: {type(e).__name__}: {e}"[:160])


class HealthPoller:
    """`GET /health` every `interval_s` from its own thread and socket, so neither the client's event
    loop nor httpx's own Python time is charged to the server."""

    def __init__(self, port: int, interval_s: float) -> None:
        self._port = port
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-poller", daemon=True)
        self.t0 = 0.0
        self.samples: list[tuple[float, float, int | None]] = []

    def __enter__(self) -> HealthPoller:
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30.0)

    def _run(self) -> None:
        client = RawHttpClient("127.0.0.1", self._port, timeout=5.0)
        next_at = time.perf_counter()
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                status: int | None
                try:
                    status, _ = client.get("/health")
                except (OSError, ValueError, StopIteration, IndexError) as e:
                    log.warning("/health: %s", e)
                    status = None
                end = time.perf_counter()
                self.samples.append((start - self.t0, (end - start) * 1e3, status))
                next_at = max(next_at + self._interval, end)  # late: the next one at once, never a burst
                self._stop.wait(max(0.0, next_at - time.perf_counter()))
        finally:
            client.close()


async def _singles(client: httpx.AsyncClient, cfg: LoadConfig, headers: Mapping[str, str], base: int) -> list[float]:
    """TTFT of sequential single requests (one at a time: nothing queues)."""
    ttft: list[float] = []
    for i in range(cfg.single_runs):
        r = await one_stream(client, chat_body(base + i, cfg.llm_max_tokens), headers)
        if r.outcome != "admitted" or r.ttft_ms is None:
            raise RuntimeError(f"a single request failed: {r.status} {r.error}")
        ttft.append(r.ttft_ms)
    return ttft


async def _run(url: str, port: int, cfg: LoadConfig, headers: Mapping[str, str],
               admission: tuple[int, int, float]) -> LLMLoadResult:
    slots, queue, queue_timeout = admission
    limits = httpx.Limits(max_connections=cfg.llm_streams + 4, max_keepalive_connections=cfg.llm_streams + 4)
    timeout = httpx.Timeout(30.0, read=queue_timeout + 300.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout, trust_env=False) as client:
        model = str((await client.get("/v1/models", headers=dict(headers))).json()["data"][0]["id"])
        await _singles(client, replace(cfg, single_runs=1), headers, 10_000)  # untimed: first-use costs
        other = OtherCpu()
        other.start()
        before = await _singles(client, cfg, headers, 1000)
        log.info("burst of %d streams (%d slots, queue %d)", cfg.llm_streams, slots, queue)
        # One keep-alive connection per stream opened first (well within uvicorn's 5 s keep-alive), so the
        # burst times the server's answers rather than this client's TCP and TLS-free handshakes.
        await asyncio.gather(*(client.get("/health") for _ in range(cfg.llm_streams)))
        with HealthPoller(port, cfg.health_interval_s) as poller:
            await asyncio.sleep(cfg.health_interval_s * 4)  # a few polls of the idle server first
            started = time.perf_counter()
            streams = await asyncio.gather(*(one_stream(client, chat_body(i, cfg.llm_max_tokens), headers)
                                             for i in range(cfg.llm_streams)))
            burst_s = time.perf_counter() - started
            await asyncio.sleep(cfg.health_interval_s * 4)
        after = await _singles(client, cfg, headers, 2000)
        other.stop()
    shift = started - poller.t0
    health = [(t - shift, ms, status) for t, ms, status in poller.samples]
    return LLMLoadResult(streams=list(streams), health=health, ttft_before_ms=before, ttft_after_ms=after,
                         slots=slots, queue_size=queue, queue_timeout_s=queue_timeout, burst_s=burst_s, model=model,
                         other_cpu_percent=other.percent)


def admission_settings(overrides: Mapping[str, str]) -> tuple[int, int, float]:
    """(slots, queue size, queue timeout) the server will run with: its settings class over this
    environment, as the child process reads it, plus `overrides`."""
    from trt_server.settings import LLMSettings

    names = ("max_concurrent", "queue_size", "queue_timeout_s")
    given = {n: overrides[f"WATUS_LLM_{n.upper()}"] for n in names if f"WATUS_LLM_{n.upper()}" in overrides}
    s = LLMSettings(**given)  # type: ignore[arg-type]  # strings validated by pydantic, as from the env
    return s.max_concurrent, s.queue_size, s.queue_timeout_s


def run_llm_load(cfg: LoadConfig, log_dir: Path) -> LLMLoadResult:
    """Start `python -m trt_server` on a free port, time singles, the burst under `/health` polls, singles."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**cfg.llm_env, "WATUS_LLM_HOST": "127.0.0.1", "WATUS_LLM_PORT": str(port)}
    key = env.get("WATUS_LLM_API_KEY", os.environ.get("WATUS_LLM_API_KEY", ""))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    admission = admission_settings(cfg.llm_env)
    log_path = log_dir / f"load-llm-{port}.log"
    with procs.service("trt_server", env, url, log_path, cfg.startup_timeout_s):
        return asyncio.run(_run(url, port, cfg, headers, admission))
