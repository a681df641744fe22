"""The engine interface every LLM backend implements.

The server owns everything that is not inference: chat templating, stop strings, tool-call parsing,
grammars built from schemas, usage counts and timings. An engine only tokenizes and streams new tokens
for a prompt of token ids, which keeps a new backend small (see DESIGN.md).

Engines that detokenize natively (llama.cpp holds back partial UTF-8 in C++) may hand over text with
their token counts; engines that give ids leave `text` as None and the server detokenizes
incrementally. Asking llama.cpp for ids would cost 6-10% of decode speed (it needs logprobs).

What an engine can do beyond plain sampling is declared in `Capabilities` (log-probabilities, several
streams per request, logit bias); the server answers 400 naming the parameter for anything an engine
does not declare, so an engine never receives a `SamplingParams` it cannot honour.
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
    #: Any signed 64-bit integer (choice i of a request gets seed + i); engines fold it into their range.
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: JSON schema the output must match (guided decoding), or None.
    json_schema: dict[str, object] | None = None
    #: Extra stop token ids besides the model's end-of-generation tokens.
    stop_token_ids: tuple[int, ...] = ()
    #: Keep generating past end-of-generation tokens (benchmarks with a fixed output length).
    ignore_eos: bool = False
    #: None: no log-probabilities. k >= 0: each generated token's log-probability plus its k most likely
    #: alternatives (`EngineDelta.logprobs`); k <= `Capabilities.max_logprobs`.
    logprobs: int | None = None
    #: (token id, bias) pairs added to the logits before sampling (OpenAI `logit_bias`: -100 bans a
    #: token, 100 forces it); only sent to engines with `Capabilities.supports_logit_bias`.
    logit_bias: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class TokenLogprob:
    """One token and its log-probability under the model's raw distribution (before temperature/top-p)."""

    token_id: int
    logprob: float
    #: The token's text and bytes as the engine knows them; None: the server decodes `token_id`.
    token: str | None = None
    token_bytes: bytes | None = None
    #: The most likely tokens at this position, best first (empty for `top` of the alternatives).
    top: tuple[TokenLogprob, ...] = ()


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
    #: With `SamplingParams.logprobs`: one entry per generated token of this delta, in order (tokens
    #: the engine does not count as output, such as end-of-generation ids, are left out).
    logprobs: list[TokenLogprob] | None = None
    #: Prompt tokens the engine took from its cache instead of prefilling them (llama.cpp's `cache_n`,
    #: TensorRT-LLM's reused KV-cache blocks); on any one delta, None where the engine cannot tell.
    cached_tokens: int | None = None


@dataclass(frozen=True)
class Capabilities:
    """What an engine can honour; the server refuses (400, naming the parameter) what it cannot.

    The defaults are what every engine can do: one stream per request, no log-probabilities, no bias.
    """

    max_context: int
    supports_grammar: bool
    #: The engine's name, as `/health` reports it.
    name: str = ""
    #: None: no log-probabilities (`logprobs` gets 400). k >= 0: the sampled token's log-probability and
    #: up to k alternatives per token (`top_logprobs` / legacy `logprobs` above k get 400).
    max_logprobs: int | None = None
    #: Several streams of one request may run side by side, each an independent sample with its own seed
    #: (`n` > 1, a list of prompts); without it those get 400.
    supports_parallel_choices: bool = False
    #: `SamplingParams.logit_bias` is applied (without it `logit_bias` gets 400).
    supports_logit_bias: bool = False
    #: Token ids run from 0 to vocab_size - 1 (checks `logit_bias` and token-id prompts); None: unknown.
    vocab_size: int | None = None


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
