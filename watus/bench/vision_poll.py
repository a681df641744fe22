"""Polling `GET /v1/scene` for `watus bench vision`: a bare keep-alive HTTP client, a paced poll loop,
and the latency burst.
"""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Callable

import httpx

from watus.bench.vision_report import VisionBenchConfig


class RawHttpClient:
    """A bare keep-alive HTTP/1.1 GET over one socket: times the server, not a client library.

    httpx spends ~0.7 ms of Python per request on its own, which on a 2-core box also competes with
    the service for the CPU; the latency goal is about the service's answer, so the burst uses this.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def get(self, path: str) -> tuple[int, bytes]:
        if self._sock is None:
            self._sock = self._connect()
        try:
            self._sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            buf = b""
            while (end := buf.find(b"\r\n\r\n")) < 0:
                buf += self._recv()
            head = buf[:end].decode("latin-1").split("\r\n")
            length = next(int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:"))
            body = buf[end + 4:]
            while len(body) < length:
                body += self._recv()
            return int(head[0].split()[1]), body[:length]
        except (OSError, ValueError, StopIteration, IndexError):
            self.close()
            raise

    def _recv(self) -> bytes:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        return chunk

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


#: GET /v1/scene once: (status, body).
FetchFn = Callable[[], tuple[int, bytes]]


def poll(fetch: FetchFn, seconds: float, hz: float, on_scene: Callable[[float, float, bytes], None]) -> int:
    """Fetch the scene at `hz` for `seconds`; calls on_scene(t, latency_ms, body). Returns failed requests."""
    errors = 0
    interval = 1.0 / hz
    end = time.perf_counter() + seconds
    next_at = time.perf_counter()
    while (now := time.perf_counter()) < end:
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        t0 = time.perf_counter()
        try:
            status, body = fetch()
        except (httpx.HTTPError, OSError, ValueError, StopIteration, IndexError):
            errors += 1
            continue
        t1 = time.perf_counter()
        if status != 200:
            errors += 1
            continue
        on_scene(t1, (t1 - t0) * 1e3, body)
    return errors


def seq_of(body: bytes) -> int | None:
    # The seq sits near the start of the body: no need to parse 3 kB per poll at 100 Hz.
    head = body[:80].decode("ascii", "replace")
    seq = head.split('"seq":', 1)[1].split(",", 1)[0] if '"seq":' in head else ""
    return int(seq) if seq.isdigit() else None


def burst(fetch: FetchFn, cfg: VisionBenchConfig) -> tuple[list[float], float, int]:
    """Latencies of a polling burst, the service FPS meanwhile, and failed requests."""
    latency: list[float] = []
    seqs: list[tuple[float, int]] = []

    def timed(t: float, ms: float, body: bytes) -> None:
        latency.append(ms)
        seq = seq_of(body)
        if seq is not None:
            seqs.append((t, seq))

    gc.collect()
    gc.disable()  # a collection in this client would be charged to the server
    try:
        errors = poll(fetch, cfg.latency_seconds, cfg.latency_hz, timed)
    finally:
        gc.enable()
    fps = (seqs[-1][1] - seqs[0][1]) / (seqs[-1][0] - seqs[0][0]) if len(seqs) > 1 else 0.0
    return latency, fps, errors
