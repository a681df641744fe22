"""Request handling behind the routes: validate, template, tokenize, admit, generate, shape the reply.

Everything a request can get wrong is found before the first byte of a stream (model name, template,
context and token budget, tool schemas); after that, errors travel as an SSE `error` event. A client
that disconnects cancels its generation, streamed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from trt_server.engines.base import Engine, SamplingParams
from trt_server.errors import APIError, BadRequestError, ContextLengthError, ModelNotFoundAPIError
from trt_server.generation import Admission, Chunk, LLMMetrics, Outcome, generate
from trt_server.protocol import (
    AllowedToolsChoice,
    ChatCompletionRequest,
    CompletionRequest,
    NamedToolChoice,
    Tool,
)
from trt_server.settings import LLMSettings
from trt_server.templating import ChatTemplate, TemplateError
from trt_server.toolcalls import ParsedToolCall, StreamingToolParser

T = TypeVar("T")


@dataclass
class ServerState:
    """What the lifespan loads once and every request reads (kept in `app.state.llm`)."""

    settings: LLMSettings
    engine: Engine
    template: ChatTemplate
    metrics: LLMMetrics
    admission: Admission
    validate_schema: Callable[[dict[str, Any]], None]
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def model_id(self) -> str:
        return self.engine.model_id


def _check_model(state: ServerState, name: str | None) -> None:
    if name and name not in (state.model_id, "default"):
        raise ModelNotFoundAPIError(f"The model '{name}' does not exist; this server serves '{state.model_id}'.",
                                    param="model")


def _budget(state: ServerState, n_prompt: int, requested: int | None, param: str) -> int:
    ctx = state.engine.capabilities.max_context
    if n_prompt >= ctx:
        raise ContextLengthError(
            f"This model's maximum context length is {ctx} tokens, but the prompt has {n_prompt} tokens. "
            "Shorten the messages.", param="messages" if param != "prompt" else "prompt")
    room = ctx - n_prompt
    if requested is not None and requested > room:
        raise ContextLengthError(
            f"This model's maximum context length is {ctx} tokens. The prompt has {n_prompt} tokens and "
            f"{param} asks for {requested}, {n_prompt + requested} in total; at most {room} can be generated.",
            param=param)
    return requested if requested is not None else min(state.settings.default_max_tokens, room)


def _sampling(req: ChatCompletionRequest | CompletionRequest, max_tokens: int,
              schema: dict[str, Any] | None) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=req.seed,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        json_schema=schema,
        ignore_eos=req.ignore_eos,
    )


def closed_schema(schema: Any) -> Any:
    """A copy where objects that do not say otherwise allow no extra properties.

    JSON schema allows extra properties by default; under a grammar a small model then invents
    properties until it runs out of tokens. OpenAI's strict mode closes objects the same way.
    """
    if isinstance(schema, list):
        return [closed_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed_schema(v) for k, v in schema.items()}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _tool_call_schema(tools: list[Tool]) -> dict[str, Any]:
    """JSON schema of one call to any of `tools`: `{"name": <const>, "arguments": <its parameters>}`."""
    options = [
        {"type": "object",
         "properties": {"name": {"const": t.function.name},
                        "arguments": closed_schema(t.function.parameters or {"type": "object"})},
         "required": ["name", "arguments"]}
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


@dataclass
class ChatPlan:
    tools: list[Tool]
    forced: bool
    schema: dict[str, Any] | None
    extra_system: str | None


def plan_tools(req: ChatCompletionRequest, grammar: bool) -> ChatPlan:
    """Which tools the model sees, whether a call is forced, and the grammar that forces it."""
    tools = list(req.tools or [])
    choice = req.tool_choice
    forced = False
    if choice == "none":
        tools = []
    elif choice == "required":
        forced = True
    elif isinstance(choice, NamedToolChoice):
        tools, forced = [t for t in tools if t.function.name == choice.function.name], True
    elif isinstance(choice, AllowedToolsChoice):
        allowed = {t.function.name for t in choice.allowed_tools.tools}
        tools = [t for t in tools if t.function.name in allowed]
        forced = choice.allowed_tools.mode == "required"
    schema: dict[str, Any] | None = None
    extra: str | None = None
    if forced:
        schema = _tool_call_schema(tools)
        if not grammar:
            extra = ("You must call exactly one of the functions now. Answer only with a JSON object "
                     '{"name": <function name>, "arguments": <arguments object>}.')
    elif req.response_format is not None and req.response_format.type != "text":
        rf = req.response_format
        given = rf.json_schema.schema_ if rf.type == "json_schema" and rf.json_schema else None
        schema = closed_schema(given) if given else {"type": "object"}
        if not grammar:
            extra = "Answer only with a JSON value matching this JSON schema: " + json.dumps(schema)
    return ChatPlan(tools=tools, forced=forced, schema=schema if grammar else None, extra_system=extra)


async def _until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client goes away first (non-streaming requests)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise asyncio.CancelledError("client disconnected")


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


_SLOT = "\u0000watus-text\u0000"


class _TextEvents:
    """Encodes the per-token SSE events fast: the constant JSON around the text is serialised once.

    On a 2-core CPU the server's Python work per token competes with llama.cpp's threads, so the hot
    path does one `json.dumps` of a short string and two byte concatenations per token.
    """

    def __init__(self, template: dict[str, Any]) -> None:
        whole = _sse(template)
        head, _, tail = whole.partition(json.dumps(_SLOT).encode())
        if not tail:
            raise ValueError("template has no text slot")
        self._head, self._tail = head, tail

    def encode(self, text: str) -> bytes:
        return self._head + json.dumps(text, ensure_ascii=False).encode() + self._tail


def _usage(n_prompt: int, n_completion: int) -> dict[str, int]:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_completion, "total_tokens": n_prompt + n_completion}


def _tool_call_dict(call: ParsedToolCall, index: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"id": call.id, "type": "function",
                         "function": {"name": call.name, "arguments": call.arguments}}
    if index is not None:
        d["index"] = index
    return d


class _Run:
    """One admitted generation: its chunks, its outcome, and its slot, released exactly once."""

    def __init__(self, state: ServerState, ids: list[int], params: SamplingParams, stops: list[str],
                 arrival: float, waited: float, endpoint: str, rid: str) -> None:
        self.state, self.ids, self.outcome = state, ids, Outcome()
        self._released = False
        self.chunks = generate(state.engine, ids, params, stops, arrival=arrival, queue_wait_s=waited,
                               outcome=self.outcome, metrics=state.metrics, endpoint=endpoint, request_id=rid)
        self.endpoint = endpoint

    def release(self, status: str) -> None:
        if not self._released:
            self._released = True
            self.state.admission.release()
            self.state.metrics.requests.labels(self.endpoint, status).inc()


async def _admit(state: ServerState, ids: list[int], params: SamplingParams, stops: list[str],
                 arrival: float, endpoint: str, rid: str) -> _Run:
    waited = await state.admission.acquire()
    return _Run(state, ids, params, stops, arrival, waited, endpoint, rid)


async def _stream_events(run: _Run, events: AsyncIterator[dict[str, Any] | bytes]) -> AsyncIterator[bytes]:
    status = "ok"
    try:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for ev in events:
                yield ev if isinstance(ev, bytes) else _sse(ev)
    except APIError as e:
        status = "error"
        yield _sse(e.body())
    except BaseException:
        status = "cancelled"
        raise
    finally:
        run.release(status)
    yield b"data: [DONE]\n\n"


def _sse_response(body: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})


# --------------------------------------------------------------------------- chat


async def chat_completion(state: ServerState, req: ChatCompletionRequest, request: Request,
                          headers: dict[str, str]) -> Response:
    arrival = time.perf_counter()
    _check_model(state, req.model)
    caps = state.engine.capabilities
    plan = plan_tools(req, caps.supports_grammar)
    if plan.schema is not None:
        try:
            await asyncio.to_thread(state.validate_schema, plan.schema)
        except ValueError as e:
            raise BadRequestError(f"The JSON schema cannot be used for constrained decoding: {e}",
                                  param="tools" if plan.forced else "response_format") from e
    try:
        prompt = state.template.render(req.messages, plan.tools or None, plan.extra_system)
    except TemplateError as e:
        raise BadRequestError(str(e), param="messages") from e
    ids = await asyncio.to_thread(state.engine.tokenizer.encode, prompt, add_special=True)
    max_tokens = _budget(state, len(ids), req.requested_max_tokens(),
                         "max_completion_tokens" if req.max_completion_tokens else "max_tokens")
    params = _sampling(req, max_tokens, plan.schema)
    rid = "chatcmpl-" + secrets.token_hex(12)
    run = await _admit(state, ids, params, req.stop_list(), arrival, "chat", rid)
    parser = StreamingToolParser(json_only=plan.forced and plan.schema is not None) if plan.tools else None
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = _chat_stream(state, run, rid, parser, include_usage)
        return _sse_response(_stream_events(run, events), headers)
    try:
        body = await _until_disconnected(request, _chat_collect(state, run, rid, parser))
    except BaseException:
        run.release("error")
        raise
    run.release("ok")
    return JSONResponse(body, headers=headers)


def _finish(outcome: Outcome, calls: list[ParsedToolCall]) -> str:
    if calls and outcome.finish_reason != "length":
        return "tool_calls"
    return outcome.finish_reason


async def _chat_collect(state: ServerState, run: _Run, rid: str,
                        parser: StreamingToolParser | None) -> dict[str, Any]:
    parts: list[str] = []
    async with contextlib.aclosing(run.chunks):  # type: ignore[type-var]
        async for chunk in run.chunks:
            parts.append(parser.feed(chunk.text).content if parser else chunk.text)
    if parser:
        parts.append(parser.finish().content)
    calls = parser.calls if parser else []
    text = "".join(parts)
    message: dict[str, Any] = {"role": "assistant", "content": text if (text or not calls) else None}
    if calls:
        message["tool_calls"] = [_tool_call_dict(c) for c in calls]
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": state.model_id,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish(run.outcome, calls)}],
        "usage": _usage(len(run.ids), run.outcome.completion_tokens),
        "timings": run.outcome.timings,
    }


async def _chat_stream(state: ServerState, run: _Run, rid: str, parser: StreamingToolParser | None,
                       include_usage: bool) -> AsyncIterator[dict[str, Any] | bytes]:
    created = int(time.time())
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": state.model_id}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **extra}

    content = _TextEvents(chunk({"content": _SLOT}))

    yield chunk({"role": "assistant", "content": ""})
    n_calls = 0

    def call_deltas(calls: list[ParsedToolCall]) -> dict[str, Any]:
        nonlocal n_calls
        deltas = []
        for c in calls:
            deltas.append(_tool_call_dict(c, n_calls))
            n_calls += 1
        return chunk({"tool_calls": deltas})

    c: Chunk
    async with contextlib.aclosing(run.chunks):  # type: ignore[type-var]
        async for c in run.chunks:
            if parser is None:
                yield content.encode(c.text)
                continue
            ev = parser.feed(c.text)
            if ev.content:
                yield content.encode(ev.content)
            if ev.tool_calls:
                yield call_deltas(ev.tool_calls)
    if parser is not None:
        ev = parser.finish()
        if ev.content:
            yield chunk({"content": ev.content})
        if ev.tool_calls:
            yield call_deltas(ev.tool_calls)
    yield chunk({}, _finish(run.outcome, parser.calls if parser else []))
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(len(run.ids), run.outcome.completion_tokens),
               "timings": run.outcome.timings}


# --------------------------------------------------------------------------- completions


async def completion(state: ServerState, req: CompletionRequest, request: Request,
                     headers: dict[str, str]) -> Response:
    arrival = time.perf_counter()
    _check_model(state, req.model)
    prompt = req.prompt
    if isinstance(prompt, str):
        ids = await asyncio.to_thread(state.engine.tokenizer.encode, prompt, add_special=True)
        prompt_text = prompt
    else:
        ids = [int(t) for t in prompt]  # type: ignore[arg-type]
        prompt_text = await asyncio.to_thread(state.engine.tokenizer.decode, ids) if req.echo else ""
    if not ids:
        raise BadRequestError("prompt must not be empty", param="prompt")
    # OpenAI's default for this legacy endpoint is 16 tokens.
    max_tokens = _budget(state, len(ids), req.max_tokens or 16, "max_tokens")
    params = _sampling(req, max_tokens, None)
    rid = "cmpl-" + secrets.token_hex(12)
    run = await _admit(state, ids, params, req.stop_list(), arrival, "completions", rid)
    echo = prompt_text if req.echo else ""
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return _sse_response(_stream_events(run, _completion_stream(state, run, rid, echo, include_usage)),
                             headers)
    try:
        body = await _until_disconnected(request, _completion_collect(state, run, rid, echo))
    except BaseException:
        run.release("error")
        raise
    run.release("ok")
    return JSONResponse(body, headers=headers)


async def _completion_collect(state: ServerState, run: _Run, rid: str, echo: str) -> dict[str, Any]:
    async with contextlib.aclosing(run.chunks):  # type: ignore[type-var]
        text = echo + "".join([c.text async for c in run.chunks])
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": state.model_id,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": run.outcome.finish_reason}],
        "usage": _usage(len(run.ids), run.outcome.completion_tokens),
        "timings": run.outcome.timings,
    }


async def _completion_stream(state: ServerState, run: _Run, rid: str, echo: str,
                             include_usage: bool) -> AsyncIterator[dict[str, Any] | bytes]:
    base = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": state.model_id}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                **extra}

    texts = _TextEvents(chunk(_SLOT))

    if echo:
        yield chunk(echo)
    async with contextlib.aclosing(run.chunks):  # type: ignore[type-var]
        async for c in run.chunks:
            yield texts.encode(c.text)
    yield chunk("", run.outcome.finish_reason)
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(len(run.ids), run.outcome.completion_tokens),
               "timings": run.outcome.timings}
