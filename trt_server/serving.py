"""Request handling behind the routes: validate, template, tokenize, admit, generate, reply.

Everything a request can get wrong is found before the first byte of a stream (model name, template,
context and token budget, tool schemas); after that, errors travel as an SSE `error` event. A client
that disconnects cancels its generation, streamed (`sse`) or not (`disconnect`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from trt_server.disconnect import ClientDisconnected, until_disconnected
from trt_server.engines.base import Engine, SamplingParams
from trt_server.errors import BadRequestError, ContextLengthError, ModelNotFoundAPIError
from trt_server.generation import Admission, LLMMetrics, Run
from trt_server.protocol import ChatCompletionRequest, CompletionRequest
from trt_server.replies import chat_body, chat_events, completion_body, completion_events
from trt_server.settings import LLMSettings
from trt_server.sse import sse_body, sse_response
from trt_server.templating import ChatTemplate, TemplateError
from trt_server.toolcalls import StreamingToolParser
from trt_server.toolchoice import plan_tools

log = logging.getLogger(__name__)

#: nginx's "client closed request": the status of a reply nobody is left to receive.
CLIENT_CLOSED = 499


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


async def _admit(state: ServerState, ids: list[int], params: SamplingParams, stops: list[str],
                 arrival: float, endpoint: str, rid: str) -> Run:
    waited = await state.admission.acquire()
    return Run(state.engine, state.admission, state.metrics, ids, params, stops, arrival=arrival, waited=waited,
               endpoint=endpoint, request_id=rid)


async def _whole_reply(run: Run, rid: str, body: Awaitable[dict[str, Any]], request: Request,
                       headers: dict[str, str]) -> Response:
    """A non-streamed reply once generated; a client that leaves first cancels the generation."""
    try:
        content = await until_disconnected(request.receive, body)
    except ClientDisconnected:
        run.release("cancelled")
        log.info("request %s: client disconnected, generation cancelled", rid)
        return Response(status_code=CLIENT_CLOSED)
    except BaseException:
        run.release("error")
        raise
    run.release("ok")
    return JSONResponse(content, headers=headers)


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
        events = chat_events(run, state.model_id, rid, parser, include_usage)
        return sse_response(sse_body(run, events), headers)
    return await _whole_reply(run, rid, chat_body(run, state.model_id, rid, parser), request, headers)


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
        events = completion_events(run, state.model_id, rid, echo, include_usage)
        return sse_response(sse_body(run, events), headers)
    return await _whole_reply(run, rid, completion_body(run, state.model_id, rid, echo), request, headers)
