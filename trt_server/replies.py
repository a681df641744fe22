"""The OpenAI reply shapes of a generation: whole bodies, and the events of a streamed reply.

Chat replies carry parsed tool calls (`tool_calls`, finish reason `tool_calls`); legacy completions
echo the prompt when asked. Both add `usage` (with `stream_options.include_usage` when streamed) and
the server's `timings`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from trt_server.generation import Chunk, Outcome, Run
from trt_server.sse import TEXT_SLOT, TextEvents
from trt_server.toolcalls import ParsedToolCall, StreamingToolParser


def _usage(n_prompt: int, n_completion: int) -> dict[str, int]:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_completion, "total_tokens": n_prompt + n_completion}


def _tool_call_dict(call: ParsedToolCall, index: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"id": call.id, "type": "function",
                         "function": {"name": call.name, "arguments": call.arguments}}
    if index is not None:
        d["index"] = index
    return d


def _finish(outcome: Outcome, calls: list[ParsedToolCall]) -> str:
    if calls and outcome.finish_reason != "length":
        return "tool_calls"
    return outcome.finish_reason


# --------------------------------------------------------------------------- chat


async def chat_body(run: Run, model_id: str, rid: str, parser: StreamingToolParser | None) -> dict[str, Any]:
    """The whole `chat.completion` once the generation ends."""
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
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_id,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish(run.outcome, calls)}],
        "usage": _usage(len(run.ids), run.outcome.completion_tokens),
        "timings": run.outcome.timings,
    }


async def chat_events(run: Run, model_id: str, rid: str, parser: StreamingToolParser | None,
                      include_usage: bool) -> AsyncIterator[dict[str, Any] | bytes]:
    """The `chat.completion.chunk` events of a streamed reply (pre-encoded bytes on the hot path)."""
    created = int(time.time())
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_id}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **extra}

    content = TextEvents(chunk({"content": TEXT_SLOT}))

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


async def completion_body(run: Run, model_id: str, rid: str, echo: str) -> dict[str, Any]:
    """The whole `text_completion` once the generation ends."""
    async with contextlib.aclosing(run.chunks):  # type: ignore[type-var]
        text = echo + "".join([c.text async for c in run.chunks])
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model_id,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": run.outcome.finish_reason}],
        "usage": _usage(len(run.ids), run.outcome.completion_tokens),
        "timings": run.outcome.timings,
    }


async def completion_events(run: Run, model_id: str, rid: str, echo: str,
                            include_usage: bool) -> AsyncIterator[dict[str, Any] | bytes]:
    """The `text_completion` events of a streamed reply."""
    base = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_id}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                **extra}

    texts = TextEvents(chunk(TEXT_SLOT))

    if echo:
        yield chunk(echo)
    async with contextlib.aclosing(run.chunks):  # type: ignore[type-var]
        async for c in run.chunks:
            yield texts.encode(c.text)
    yield chunk("", run.outcome.finish_reason)
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(len(run.ids), run.outcome.completion_tokens),
               "timings": run.outcome.timings}
