"""The targets of `watus bench llm`: `kind:value` specs, the HTTP drivers, and `open_target`.

Every driver times a generation the same way, recording in a `StreamTiming` when bytes arrive (raw
httpx streaming, no SDK) or, in-process, when llama.cpp's callback fires.

- `openai:<base_url>`: `OpenAIDriver`, streaming `/v1/completions` (or `/v1/chat/completions`).
- `ollama:<base_url>`: `OllamaDriver`, Ollama's native API with its own timings.
- `inprocess:<gguf|default>`: `InProcessDriver` (in `llm_local`), no HTTP at all.
- `llamacpp-server:<gguf|default>`: llama.cpp's built-in HTTP server, through `OpenAIDriver`.
- `self:[KEY=VALUE,...]`: `python -m trt_server` started by `trt_server_process` (in `llm_local`),
  through `OpenAIDriver`.

`open_target` loads or starts one of them and releases it (model memory, process) afterwards.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from watus.bench.llm_local import InProcessDriver, load_llamacpp, resolve_gguf, trt_server_process
from watus.bench.llm_types import BenchConfig, BenchError, StreamTiming, openai_chunk

log = logging.getLogger(__name__)


class _Rejected(BenchError):
    """The target refused the request body (HTTP 400/422): maybe an extra field such as `ignore_eos`."""


class TargetKind(str, enum.Enum):
    openai = "openai"
    ollama = "ollama"
    inprocess = "inprocess"
    llamacpp_server = "llamacpp-server"
    self_server = "self"


@dataclass(frozen=True)
class TargetSpec:
    kind: TargetKind
    value: str
    #: The text as given on the command line; names the target in the report.
    spec: str


def parse_target(spec: str) -> TargetSpec:
    """`kind:value` → TargetSpec. Raises ValueError for an unknown kind or a missing URL."""
    kind_text, sep, value = spec.partition(":")
    try:
        kind = TargetKind(kind_text.strip().lower())
    except ValueError:
        kinds = ", ".join(k.value for k in TargetKind)
        raise ValueError(f"unknown target kind in {spec!r}: use one of {kinds}") from None
    if not sep and kind is not TargetKind.self_server:
        raise ValueError(f"target {spec!r} needs a value after ':'")
    value = value.strip()
    if kind in (TargetKind.openai, TargetKind.ollama) and not value.startswith(("http://", "https://")):
        raise ValueError(f"target {spec!r}: give the server's base URL, e.g. {kind.value}:http://127.0.0.1:8080")
    if kind in (TargetKind.inprocess, TargetKind.llamacpp_server) and not value:
        value = "default"
    return TargetSpec(kind=kind, value=value, spec=spec)


class Driver(Protocol):
    """One loaded target: times a generation of `max_tokens` for a prompt."""

    model: str | None
    ignore_eos: bool
    supports_concurrency: bool

    def generate(self, prompt: str, max_tokens: int) -> StreamTiming: ...

    def close(self) -> None: ...


def _http_client(base_url: str, cfg: BenchConfig, api_key: str | None) -> httpx.Client:
    headers = {"Accept-Encoding": "identity"}  # no gzip between the bytes and our clock
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    streams = max((*cfg.concurrency, 1))
    # trust_env=False: a proxy from the environment between us and the target would be timed too.
    limits = httpx.Limits(max_connections=streams + 2, max_keepalive_connections=streams + 2)
    return httpx.Client(base_url=base_url, headers=headers, trust_env=False, limits=limits,
                        timeout=httpx.Timeout(cfg.timeout_s, connect=10.0))


def _iter_lines(resp: httpx.Response) -> Iterator[tuple[float, bytes]]:
    """Complete lines of a streamed body, each stamped with the arrival time of its last bytes."""
    buf = b""
    for raw in resp.iter_raw():
        t = time.perf_counter()
        buf += raw
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield t, line.rstrip(b"\r")
    if buf.strip():
        yield time.perf_counter(), buf


def _raise_for_status(resp: httpx.Response, what: str) -> None:
    if resp.status_code == 200:
        return
    body = resp.read().decode("utf-8", "replace")[:300]
    if resp.status_code in (400, 422):
        raise _Rejected(f"{what}: HTTP {resp.status_code}: {body}")
    raise BenchError(f"{what}: HTTP {resp.status_code}: {body}")


class OpenAIDriver:
    """Any OpenAI-compatible server, streaming `/v1/completions` (or `/v1/chat/completions`)."""

    supports_concurrency = True

    def __init__(self, base_url: str, cfg: BenchConfig, *, api_key: str | None,
                 ignore_eos: bool = True) -> None:
        base = base_url.rstrip("/")
        base = base.removesuffix("/v1")
        self._cfg = cfg
        self._http = _http_client(base, cfg, api_key)
        self.ignore_eos = ignore_eos
        self.model: str | None = cfg.model or self._discover_model()

    def _discover_model(self) -> str | None:
        try:
            data = self._http.get("/v1/models", timeout=10.0).raise_for_status().json()["data"]
            return str(data[0]["id"]) if data else None
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as e:
            log.warning("could not list models at %s (%s); sending no model name", self._http.base_url, e)
            return None

    def _body(self, prompt: str, max_tokens: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0, "seed": self._cfg.seed,
                                "stream": True, "stream_options": {"include_usage": True}}
        if self._cfg.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if self.model:
            body["model"] = self.model
        if self.ignore_eos:
            body["ignore_eos"] = True
        body.update(extra or {})
        return body

    def generate(self, prompt: str, max_tokens: int, extra: dict[str, Any] | None = None) -> StreamTiming:
        """Time one request; `extra` adds to its body (a refusal of it is an error, not a retry)."""
        if extra:
            return self._generate(prompt, max_tokens, extra)
        try:
            return self._generate(prompt, max_tokens)
        except _Rejected as e:
            if not self.ignore_eos:
                raise
            log.warning("%s refused the request with ignore_eos (%s); retrying without it, so output "
                        "may end before max_tokens", self._http.base_url, e)
            self.ignore_eos = False
            return self._generate(prompt, max_tokens)

    def _generate(self, prompt: str, max_tokens: int, extra: dict[str, Any] | None = None) -> StreamTiming:
        path = "/v1/chat/completions" if self._cfg.chat else "/v1/completions"
        body = self._body(prompt, max_tokens, extra)
        st = StreamTiming(start=time.perf_counter())
        with self._http.stream("POST", path, json=body) as resp:
            _raise_for_status(resp, path)
            for t, line in _iter_lines(resp):
                if not line.startswith(b"data:"):
                    continue  # blank separators, `:` keep-alive comments, `event:` lines
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                openai_chunk(st, json.loads(data), t, self._cfg.chat)
        st.end = time.perf_counter()
        return st

    def close(self) -> None:
        self._http.close()


class OllamaDriver:
    """Ollama's native streaming API, reading its own eval counts and durations from the last object."""

    supports_concurrency = True
    ignore_eos = False  # Ollama has no such option: output may end before num_predict

    def __init__(self, base_url: str, cfg: BenchConfig) -> None:
        self._cfg = cfg
        self._http = _http_client(base_url.rstrip("/"), cfg, cfg.api_key)
        self.model: str | None = cfg.model or self._discover_model()

    def _discover_model(self) -> str:
        try:
            models = self._http.get("/api/tags", timeout=10.0).raise_for_status().json().get("models") or []
        except (httpx.HTTPError, ValueError) as e:
            raise BenchError(f"Ollama at {self._http.base_url} did not answer /api/tags: {e}") from e
        if not models:
            raise BenchError(f"Ollama at {self._http.base_url} has no models; pull one or pass --model")
        return str(models[0]["name"])

    def generate(self, prompt: str, max_tokens: int) -> StreamTiming:
        cfg = self._cfg
        body: dict[str, Any] = {
            "model": self.model, "stream": True,
            "options": {"num_predict": max_tokens, "temperature": 0, "seed": cfg.seed,
                        "num_ctx": cfg.context_length},
        }
        if cfg.chat:
            path, body["messages"] = "/api/chat", [{"role": "user", "content": prompt}]
        else:
            # raw: the prompt as given, no template, like /v1/completions elsewhere
            path, body["prompt"], body["raw"] = "/api/generate", prompt, True
        st = StreamTiming(start=time.perf_counter())
        with self._http.stream("POST", path, json=body) as resp:
            _raise_for_status(resp, path)
            for t, line in _iter_lines(resp):
                if not line.strip():
                    continue
                obj = json.loads(line)
                if "error" in obj:
                    raise BenchError(f"Ollama: {obj['error']}")
                text = (obj.get("message") or {}).get("content", "") if cfg.chat else obj.get("response", "")
                st.text(t, text or "")
                if obj.get("done"):
                    st.finish = t
                    _ollama_final(st, obj)
                    break
        st.end = time.perf_counter()
        return st

    def close(self) -> None:
        self._http.close()


def _ollama_final(st: StreamTiming, obj: dict[str, Any]) -> None:
    st.prompt_tokens = obj.get("prompt_eval_count")
    st.completion_tokens = obj.get("eval_count")
    if st.prompt_tokens and obj.get("prompt_eval_duration"):
        st.server_prefill_tps = st.prompt_tokens / (obj["prompt_eval_duration"] / 1e9)
    if st.completion_tokens and obj.get("eval_duration"):
        st.server_decode_tps = st.completion_tokens / (obj["eval_duration"] / 1e9)


@contextlib.contextmanager
def open_target(spec: TargetSpec, cfg: BenchConfig, log_dir: Path) -> Iterator[Driver]:
    """Load or start the target, yield its driver, release it (model memory, process) afterwards."""
    driver: Driver
    if spec.kind is TargetKind.openai:
        driver = OpenAIDriver(spec.value, cfg, api_key=cfg.api_key)
    elif spec.kind is TargetKind.ollama:
        driver = OllamaDriver(spec.value, cfg)
    elif spec.kind is TargetKind.self_server:
        with trt_server_process(spec.value, cfg, log_dir) as (url, key):
            driver = OpenAIDriver(url, cfg, api_key=key)
            try:
                yield driver
            finally:
                driver.close()
        return
    else:
        path = resolve_gguf(spec.value)
        slots = 1 if spec.kind is TargetKind.inprocess else cfg.slots
        server = load_llamacpp(path, cfg, slots)
        try:
            if spec.kind is TargetKind.inprocess:
                driver = InProcessDriver(server, cfg, model=path.name)
            else:
                driver = OpenAIDriver(server.listening_address, cfg, api_key=None)
            try:
                yield driver
            finally:
                driver.close()
        finally:
            del server  # xllamacpp frees the model in the destructor: nothing else may hold it
            gc.collect()
        return
    try:
        yield driver
    finally:
        driver.close()
