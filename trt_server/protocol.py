"""Wire schemas of the OpenAI-compatible API (requests fully validated before any byte is streamed).

Only what the server honours is modelled; unknown fields are accepted and ignored, as OpenAI clients
send new fields before servers know them. Fields the server cannot honour (images, `suffix`) are
rejected with a 400 instead of being silently dropped. What depends on the engine (logprobs, `n`,
`logit_bias`) and checks across fields are in `trt_server.support`, which names the parameter.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: Most choices one request may ask for (chat `n`; completions: prompts x `n`).
MAX_CHOICES = 64
#: Most alternatives per token (`top_logprobs`, legacy `logprobs`), OpenAI's limit for chat.
MAX_TOP_LOGPROBS = 20
_INT64 = 2**63


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class RefusalPart(_Lenient):
    """An assistant's refusal, as clients send it back in the history: text for the template."""

    type: Literal["refusal"]
    refusal: str


class ImagePart(_Lenient):
    type: Literal["image_url", "input_audio", "file"]


ContentPart = Annotated[TextPart | RefusalPart | ImagePart, Field(discriminator="type")]
Content = str | list[ContentPart]


class UnsupportedContentError(ValueError):
    """A content part a text-only model cannot take (an image, audio, a file): the client's 400."""


def content_text(content: Content | None) -> str:
    """Flatten OpenAI content (a string or a list of text and refusal parts) to the string a template takes."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, RefusalPart):
            texts.append(part.refusal)
        else:
            raise UnsupportedContentError(f"content part {i} of type '{part.type}' is not supported by this "
                                          "text-only model")
    return "".join(texts)


class FunctionCall(_Lenient):
    name: str
    arguments: str = "{}"

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, v: str) -> str:
        if not v.strip():
            return "{}"  # some clients send "" for a call without arguments
        try:
            parsed = json.loads(v)
        except json.JSONDecodeError as e:
            raise ValueError(f"arguments must be a JSON object serialised as a string ({e})") from None
        if not isinstance(parsed, dict):
            raise ValueError("arguments must be a JSON object serialised as a string")
        return v


class ToolCall(_Lenient):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Lenient):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Lenient):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Lenient):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _has_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs `content` or `tool_calls`")
        return self


class ToolMessage(_Lenient):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage,
                        Field(discriminator="role")]


class FunctionDefinition(_Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _FUNCTION_NAME.match(v):
            raise ValueError("function name must be 1-64 characters of a-z, A-Z, 0-9, _ . : -")
        return v

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        kind = v.get("type", "object")
        if kind != "object":
            raise ValueError("function parameters must be a JSON schema of type 'object'")
        props = v.get("properties", {})
        if not isinstance(props, dict) or not all(isinstance(p, dict) for p in props.values()):
            raise ValueError("function parameters 'properties' must map names to JSON schemas")
        required = v.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError("function parameters 'required' must be a list of property names")
        return v


class Tool(_Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedFunction


class AllowedTools(_Lenient):
    mode: Literal["auto", "required"]
    tools: list[NamedToolChoice]


class AllowedToolsChoice(_Lenient):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice


class JsonSchemaFormat(_Lenient):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type 'json_schema' needs a `json_schema` object")
        return self


class StreamOptions(_Lenient):
    include_usage: bool = False


Stop = str | list[str] | None


class _SamplingFields(_Lenient):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=-_INT64, le=_INT64 - 1)
    stop: Stop = None
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    #: Extension (vLLM, llama.cpp): keep going past end-of-generation; for benchmarks.
    ignore_eos: bool = False
    #: Token id (as a string) -> bias in [-100, 100] added to its logit.
    logit_bias: dict[str, float] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            if not key.strip().isdigit():
                raise ValueError(f"logit_bias keys must be token ids (non-negative integers as strings), not {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"logit_bias values must be between -100 and 100 (token {key}: {bias:g})")
        return v

    def bias_pairs(self) -> tuple[tuple[int, float], ...]:
        return tuple(sorted((int(k), float(b)) for k, b in (self.logit_bias or {}).items()))

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Stop) -> Stop:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 16:
            raise ValueError("at most 16 stop strings")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        return v

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("messages")
    @classmethod
    def _not_empty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("messages must contain at least one message")
        return v

    @model_validator(mode="after")
    def _tool_choice_consistent(self) -> ChatCompletionRequest:
        names = {t.function.name for t in self.tools or []}
        if len(names) != len(self.tools or []):
            raise ValueError("tool function names must be unique")
        choice = self.tool_choice
        if choice in ("required",) and not names:
            raise ValueError("tool_choice 'required' needs `tools`")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names function '{choice.function.name}', which is not in `tools`")
        if isinstance(choice, AllowedToolsChoice):
            unknown = [t.function.name for t in choice.allowed_tools.tools if t.function.name not in names]
            if unknown:
                raise ValueError(f"allowed_tools names unknown functions: {', '.join(unknown)}")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


Prompt = str | list[int]


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    #: Alternatives per token in the legacy format (0: only the sampled token's log-probability).
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("prompt must not be empty")
            if len(v) > MAX_CHOICES:
                raise ValueError(f"at most {MAX_CHOICES} prompts per request")
            if isinstance(v[0], str):
                return v
            for p in v if isinstance(v[0], list) else [v]:
                if not p:
                    raise ValueError("a prompt of token ids must not be empty")
                if any(t < 0 for t in p):
                    raise ValueError("token ids must be non-negative integers")
        return v

    def prompts(self) -> list[Prompt]:
        """The prompts of the request: one string or token-id list each."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], (str, list)):
            return list(p)
        return [p]  # type: ignore[list-item]
