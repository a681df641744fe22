"""The engine interface every LLM backend implements.

The server owns everything that is not inference: chat templating, stop strings, tool-call parsing,
grammars built from schemas, usage counts and timings. An engine only tokenizes and streams new tokens
for a prompt of token ids, which keeps a new backend small (see DESIGN.md).

Engines that detokenize natively (llama.cpp holds back partial UTF-8 in C++) may hand over text with
their token counts; engines that give ids leave `text` as None and the server detokenizes
incrementally. Asking llama.cpp for ids would cost 6-10% of decode speed (it needs logprobs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class EngineError(Exception):
    """An engine failed while loading or generating."""


class EngineNotInstalledError(EngineError):
    """The engine's library is not installed; the message says what to install."""


class ModelNotFoundError(EngineError):
    """The model file or directory does not exist; the message names the setting."""


@dataclass(frozen=True)
class SamplingParams:
    """What the server asks of one generation, already validated and clamped."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: JSON schema the output must match (guided decoding), or None.
    json_schema: dict[str, object] | None = None
    #: Extra stop token ids besides the model's end-of-generation tokens.
    stop_token_ids: tuple[int, ...] = ()
    #: Keep generating past end-of-generation tokens (benchmarks with a fixed output length).
    ignore_eos: bool = False


@dataclass
class EngineDelta:
    """New output of one engine step."""

    token_ids: list[int] = field(default_factory=list)
    #: Text of these tokens when the engine detokenizes itself, else None.
    text: str | None = None
    #: Tokens this delta stands for (== len(token_ids) when ids are given).
    n_tokens: int = 0
    #: "stop" (end of generation token) or "length"; set on the last delta only.
    finish_reason: str | None = None


@dataclass(frozen=True)
class Capabilities:
    max_context: int
    supports_grammar: bool
    #: The engine's name, as `/health` reports it.
    name: str = ""


@runtime_checkable
class Tokenizer(Protocol):
    """The model's own tokenizer."""

    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    add_bos: bool

    def encode(self, text: str, *, add_special: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@runtime_checkable
class Engine(Protocol):
    """An inference backend: load once, then stream token deltas for prompts of token ids."""

    # Read-only members (properties) so implementations may narrow their types.
    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def model_id(self) -> str: ...

    async def load(self) -> None: ...

    def ready(self) -> bool: ...

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[EngineDelta]: ...

    def info(self) -> dict[str, object]: ...

    def check_grammar(self, schema: dict[str, object]) -> None:
        """Raise ValueError if this engine cannot decode under `schema` (after the generic JSON-schema check)."""
        ...

    async def close(self) -> None: ...
