"""Request handling behind the routes: validate, template, tokenize, admit, generate, reply.

Everything a request can get wrong is found before the first byte of a stream (model name, what the
engine supports, template, context and token budget, tool schemas); after that, errors travel as an SSE
`error` event. A request becomes one stream per choice (`n` per prompt), admitted together; with a
seed, choice i samples with seed + i, so the same request gives the same choices. A client that
disconnects cancels its generation, streamed (`sse`) or not (`disconnect`); so does a stop whose drain
time ran out (`watus.core.drain`), with an error event or a 503.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from trt_server.admission import Admission
from trt_server.disconnect import ClientDisconnected, until_disconnected
from trt_server.engines.base import Engine, SamplingParams
from trt_server.errors import BadRequestError, ContextLengthError, ModelNotFoundAPIError
from trt_server.generation import LLMMetrics, Run, StreamSpec
from trt_server.protocol import ChatCompletionRequest, CompletionRequest, UnsupportedContentError
from trt_server.replies import chat_body, chat_events, completion_body, completion_events
from trt_server.settings import LLMSettings
from trt_server.sse import sse_body, sse_response
from trt_server.support import check_chat, check_completion, check_token_ids
from trt_server.templating import ChatTemplate, TemplateError
from trt_server.toolcalls import StreamingToolParser
from trt_server.toolchoice import plan_tools
from watus.core.drain import Drain

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
    #: The stop in progress (SIGTERM): generations still running when it runs out end with an error.
    drain: Drain | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def model_names(self) -> list[str]:
        """The names `/v1/models` lists: the served id, then the aliases (`*` is not a name)."""
        aliases = [a for a in self.settings.model_aliases if a not in ("*", self.model_id)]
        return [self.model_id, *dict.fromkeys(aliases)]

    def accepts(self, name: str) -> bool:
        """Whether requests may name the model `name` (its id, an alias, `default`, anything with `*`)."""
        return name in (self.model_id, "default") or name in self.settings.model_aliases \
            or "*" in self.settings.model_aliases


def _check_model(state: ServerState, name: str | None) -> None:
    if name and not state.accepts(name):
        also = [n for n in state.model_names if n != state.model_id]
        known = f"'{state.model_id}'" + (f" (also as {', '.join(also)})" if also else "")
        raise ModelNotFoundAPIError(f"The model '{name}' does not exist; this server serves {known}.",
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
              schema: dict[str, Any] | None, logprobs: int | None) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=req.seed,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        json_schema=schema,
        ignore_eos=req.ignore_eos,
        logprobs=logprobs,
        logit_bias=req.bias_pairs(),
    )


def _choice(params: SamplingParams, i: int) -> SamplingParams:
    """Choice i of a request: its own seed (seed + i), so n seeded choices differ and reproduce."""
    return params if i == 0 or params.seed is None else replace(params, seed=params.seed + i)


async def _admit(state: ServerState, specs: Sequence[StreamSpec], stops: list[str], arrival: float,
                 endpoint: str, rid: str) -> Run:
    # All of a request's streams start together, up to every slot; more take turns on those.
    weight = min(len(specs), state.admission.slots)
    waited = await state.admission.acquire(weight)
    return Run(state.engine, state.admission, state.metrics, specs, stops, arrival=arrival, waited=waited,
               weight=weight, endpoint=endpoint, request_id=rid, drain=state.drain)


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
    check_chat(req, caps)
    plan = plan_tools(req, caps.supports_grammar)
    if plan.schema is not None:
        try:
            await asyncio.to_thread(state.validate_schema, plan.schema)
        except ValueError as e:
            raise BadRequestError(f"The JSON schema cannot be used for constrained decoding: {e}",
                                  param="tools" if plan.forced else "response_format") from e
    try:
        prompt = state.template.render(req.messages, plan.tools or None, plan.extra_system)
    except (TemplateError, UnsupportedContentError) as e:
        raise BadRequestError(str(e), param="messages") from e
    ids = await asyncio.to_thread(state.engine.tokenizer.encode, prompt, add_special=True)
    max_tokens = _budget(state, len(ids), req.requested_max_tokens(),
                         "max_completion_tokens" if req.max_completion_tokens else "max_tokens")
    top = (req.top_logprobs or 0) if req.logprobs else None
    params = _sampling(req, max_tokens, plan.schema, top)
    specs = [StreamSpec(i, ids, _choice(params, i)) for i in range(req.n or 1)]
    rid = "chatcmpl-" + secrets.token_hex(12)
    run = await _admit(state, specs, req.stop_list(), arrival, "chat", rid)
    names = [t.function.name for t in plan.tools]
    json_only = plan.forced and plan.schema is not None
    parsers = [StreamingToolParser(json_only=json_only, names=names) if plan.tools else None for _ in specs]
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = chat_events(run, state.model_id, rid, parsers, include_usage, top, len(ids))
        return sse_response(sse_body(run, events), headers)
    return await _whole_reply(run, rid, chat_body(run, state.model_id, rid, parsers, top, len(ids)), request,
                              headers)


# --------------------------------------------------------------------------- completions


async def _encode_prompt(state: ServerState, prompt: str | list[int], echo: bool) -> tuple[list[int], str]:
    """A prompt's token ids, and its text when it is echoed."""
    if isinstance(prompt, str):
        ids = await asyncio.to_thread(state.engine.tokenizer.encode, prompt, add_special=True)
        text = prompt
    else:
        check_token_ids(prompt, state.engine.capabilities, "prompt")
        ids = list(prompt)
        text = await asyncio.to_thread(state.engine.tokenizer.decode, ids) if echo else ""
    if not ids:
        raise BadRequestError("prompt must not be empty", param="prompt")
    return ids, text


async def completion(state: ServerState, req: CompletionRequest, request: Request,
                     headers: dict[str, str]) -> Response:
    arrival = time.perf_counter()
    _check_model(state, req.model)
    prompts = req.prompts()
    check_completion(req, state.engine.capabilities, len(prompts))
    encoded = [await _encode_prompt(state, p, req.echo) for p in prompts]
    # OpenAI's default for this legacy endpoint is 16 tokens.
    max_tokens = _budget(state, max(len(ids) for ids, _ in encoded), req.max_tokens or 16, "max_tokens")
    params = _sampling(req, max_tokens, None, req.logprobs)
    n = req.n or 1
    # OpenAI's order: the n choices of the first prompt, then those of the next.
    specs = [StreamSpec(p * n + j, ids, _choice(params, j)) for p, (ids, _) in enumerate(encoded) for j in range(n)]
    echoes = [encoded[s.index // n][1] if req.echo else "" for s in specs]
    prompt_tokens = sum(len(ids) for ids, _ in encoded)
    rid = "cmpl-" + secrets.token_hex(12)
    run = await _admit(state, specs, req.stop_list(), arrival, "completions", rid)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = completion_events(run, state.model_id, rid, echoes, include_usage, req.logprobs, prompt_tokens)
        return sse_response(sse_body(run, events), headers)
    body = completion_body(run, state.model_id, rid, echoes, req.logprobs, prompt_tokens)
    return await _whole_reply(run, rid, body, request, headers)
