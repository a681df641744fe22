"""The OpenAI reply shapes of a request: whole bodies, and the events of a streamed reply.

A request has one stream per choice (`n`, several prompts); each becomes one entry of `choices` with its
`index`, and streamed replies interleave the choices' events as they come (`fanout.merge`). Chat replies
carry parsed tool calls (`tool_calls`, finish reason `tool_calls`; a call cut by `max_tokens` keeps
`length`); legacy completions echo the prompt when asked. Log-probabilities, when asked, are in each
choice (chat: `logprobs.content`; completions: the legacy `tokens`/`token_logprobs` lists), in streams
with the event that carries their text. Both add `usage` (with `stream_options.include_usage` when
streamed) and the server's `timings`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from trt_server.engines.base import TokenLogprob
from trt_server.errors import BadRequestError
from trt_server.fanout import all_of, merge
from trt_server.generation import Chunk, Outcome, Run, Stream, merged_timings
from trt_server.logprobs import LegacyLogprobs, chat_content, chat_logprobs
from trt_server.sse import TEXT_SLOT, TextEvents
from trt_server.toolcalls import IncompleteToolCallError, ParsedToolCall, StreamEvent, StreamingToolParser

Event = dict[str, Any] | bytes


def _usage(run: Run, n_prompt: int) -> dict[str, Any]:
    n_completion = sum(s.outcome.completion_tokens for s in run.streams)
    usage: dict[str, Any] = {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                             "total_tokens": n_prompt + n_completion}
    cached = _cached(run, n_prompt)
    if cached is not None:  # only where the engine said: a made-up 0 would read as "the cache missed"
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _cached(run: Run, n_prompt: int) -> int | None:
    """Prompt tokens served from the engine's cache, counted once per prompt as `prompt_tokens` is (the n
    choices of one prompt share it: the most any of them reused); None if no stream's engine said."""
    if all(s.outcome.cached_tokens is None for s in run.streams):
        return None
    best: dict[tuple[int, ...], int] = {}
    for s in run.streams:
        key = tuple(s.ids)
        best[key] = max(best.get(key, 0), s.outcome.cached_tokens or 0)
    return min(n_prompt, sum(best.values()))


def _timings(run: Run) -> dict[str, float]:
    return merged_timings([s.outcome for s in run.streams])


def _tool_call_dict(call: ParsedToolCall, index: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"id": call.id, "type": "function",
                         "function": {"name": call.name, "arguments": call.arguments}}
    if index is not None:
        d["index"] = index
    return d


def _finish(outcome: Outcome, calls: list[ParsedToolCall]) -> str:
    # A call the output ended inside keeps the reason it ended ("length"), as OpenAI reports it.
    if calls and outcome.finish_reason != "length" and all(c.complete for c in calls):
        return "tool_calls"
    return outcome.finish_reason


def _end_calls(parser: StreamingToolParser) -> StreamEvent:
    try:
        return parser.finish()
    except IncompleteToolCallError as e:
        raise BadRequestError(f"The output ended inside a tool call before its function name was complete "
                              f"({e}); allow more max_tokens.", param="max_tokens") from e


# --------------------------------------------------------------------------- chat


async def _chat_choice(stream: Stream, parser: StreamingToolParser | None, top: int | None) -> dict[str, Any]:
    parts: list[str] = []
    logprobs: list[TokenLogprob] = []
    async with contextlib.aclosing(stream.chunks):  # type: ignore[type-var]
        async for chunk in stream.chunks:
            parts.append(parser.feed(chunk.text).content if parser else chunk.text)
            if chunk.logprobs:
                logprobs.extend(chunk.logprobs)
    if parser:
        parts.append(_end_calls(parser).content)
    calls = parser.calls if parser else []
    text = "".join(parts)
    message: dict[str, Any] = {"role": "assistant", "content": text if (text or not calls) else None}
    if calls:
        message["tool_calls"] = [_tool_call_dict(c) for c in calls]
    return {"index": stream.index, "message": message,
            "logprobs": chat_logprobs(logprobs, top) if top is not None else None,
            "finish_reason": _finish(stream.outcome, calls)}


async def chat_body(run: Run, model_id: str, rid: str, parsers: list[StreamingToolParser | None],
                    top: int | None, prompt_tokens: int) -> dict[str, Any]:
    """The whole `chat.completion` once every choice has ended."""
    choices = await all_of([_chat_choice(s, p, top) for s, p in zip(run.streams, parsers, strict=True)])
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_id,
        "choices": choices, "usage": _usage(run, prompt_tokens), "timings": _timings(run),
    }


async def _chat_choice_events(stream: Stream, base: dict[str, Any], extra: dict[str, Any],
                              parser: StreamingToolParser | None, top: int | None) -> AsyncIterator[Event]:
    index = stream.index
    pending: list[TokenLogprob] = []

    def chunk(delta: dict[str, Any], finish: str | None = None,
              logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
                **extra}

    def take() -> dict[str, Any] | None:
        """The log-probabilities of the tokens sent since the last event that carried some."""
        if top is None:
            return None
        out = {"content": chat_content(pending, top), "refusal": None}
        pending.clear()
        return out

    content = TextEvents(chunk({"content": TEXT_SLOT}))

    def text_event(text: str) -> Event:
        # Without log-probabilities: the pre-encoded fast path of every token.
        return content.encode(text) if top is None else chunk({"content": text}, logprobs=take())

    n_calls = 0

    def call_deltas(calls: list[ParsedToolCall]) -> dict[str, Any]:
        nonlocal n_calls
        deltas = []
        for c in calls:
            deltas.append(_tool_call_dict(c, n_calls))
            n_calls += 1
        return chunk({"tool_calls": deltas}, logprobs=take())

    yield chunk({"role": "assistant", "content": ""})
    c: Chunk
    async with contextlib.aclosing(stream.chunks):  # type: ignore[type-var]
        async for c in stream.chunks:
            if c.logprobs:
                pending.extend(c.logprobs)
            if parser is None:
                yield text_event(c.text)
                continue
            ev = parser.feed(c.text)
            if ev.content:
                yield text_event(ev.content)
            if ev.tool_calls:
                yield call_deltas(ev.tool_calls)
    if parser is not None:
        ev = _end_calls(parser)
        if ev.content:
            yield chunk({"content": ev.content}, logprobs=take())
        if ev.tool_calls:
            yield call_deltas(ev.tool_calls)
    yield chunk({}, _finish(stream.outcome, parser.calls if parser else []), logprobs=take() if pending else None)


async def _choices_then_usage(run: Run, sources: list[AsyncIterator[Event]], base: dict[str, Any],
                              include_usage: bool, prompt_tokens: int) -> AsyncIterator[Event]:
    """Every choice's events (interleaved when there are several), then the usage chunk if asked for."""
    events = sources[0] if len(sources) == 1 else merge(sources)
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for ev in events:
            yield ev
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(run, prompt_tokens), "timings": _timings(run)}


async def chat_events(run: Run, model_id: str, rid: str, parsers: list[StreamingToolParser | None],
                      include_usage: bool, top: int | None, prompt_tokens: int) -> AsyncIterator[Event]:
    """The `chat.completion.chunk` events of a streamed reply (pre-encoded bytes on the hot path)."""
    base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model_id}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    sources = [_chat_choice_events(s, base, extra, p, top) for s, p in zip(run.streams, parsers, strict=True)]
    async for ev in _choices_then_usage(run, sources, base, include_usage, prompt_tokens):
        yield ev


# --------------------------------------------------------------------------- completions


async def _completion_choice(stream: Stream, echo: str, top: int | None) -> dict[str, Any]:
    texts = [echo]
    logprobs: list[TokenLogprob] = []
    async with contextlib.aclosing(stream.chunks):  # type: ignore[type-var]
        async for c in stream.chunks:
            texts.append(c.text)
            if c.logprobs:
                logprobs.extend(c.logprobs)
    return {"index": stream.index, "text": "".join(texts),
            "logprobs": LegacyLogprobs(top, len(echo)).block(logprobs) if top is not None else None,
            "finish_reason": stream.outcome.finish_reason}


async def completion_body(run: Run, model_id: str, rid: str, echoes: list[str], top: int | None,
                          prompt_tokens: int) -> dict[str, Any]:
    """The whole `text_completion` once every choice has ended."""
    choices = await all_of([_completion_choice(s, e, top) for s, e in zip(run.streams, echoes, strict=True)])
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model_id,
        "choices": choices, "usage": _usage(run, prompt_tokens), "timings": _timings(run),
    }


async def _completion_choice_events(stream: Stream, base: dict[str, Any], extra: dict[str, Any], echo: str,
                                    top: int | None) -> AsyncIterator[Event]:
    index = stream.index
    legacy = LegacyLogprobs(top, len(echo)) if top is not None else None

    def chunk(text: str, finish: str | None = None, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}],
                **extra}

    texts = TextEvents(chunk(TEXT_SLOT))
    if echo:
        yield chunk(echo)
    async with contextlib.aclosing(stream.chunks):  # type: ignore[type-var]
        async for c in stream.chunks:
            if legacy is None:
                yield texts.encode(c.text)
            else:
                yield chunk(c.text, logprobs=legacy.block(c.logprobs or []))
    yield chunk("", stream.outcome.finish_reason)


async def completion_events(run: Run, model_id: str, rid: str, echoes: list[str], include_usage: bool,
                            top: int | None, prompt_tokens: int) -> AsyncIterator[Event]:
    """The `text_completion` events of a streamed reply."""
    base = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_id}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    sources = [_completion_choice_events(s, base, extra, e, top) for s, e in zip(run.streams, echoes, strict=True)]
    async for ev in _choices_then_usage(run, sources, base, include_usage, prompt_tokens):
        yield ev
