"""The FastAPI app: `create_app(settings)`, a lifespan that loads and warms the engine, thin routes.

The model loads in a background task so that `/health` answers (503, "loading") from the first second,
which is what `watus up`, systemd and load balancers poll; the `/v1/*` routes answer 503 until it is
ready. A load failure is logged with what to do and reported by `/health`, and `on_load_failure` lets
the entry point stop the process with a non-zero status. On SIGTERM the app drains (`watus.core.drain`,
`WATUS_LLM_DRAIN_S`): new requests get 503 while the replies in flight finish or are cut off cleanly.

The API routes are served under `/v1` and, as llama.cpp's server does, without it (`/chat/completions`,
`/completions`, `/models`), for clients configured with a base URL that lacks `/v1`; only the `/v1`
ones are in the OpenAPI schema. With an API key set, every route but `/health` and `/metrics` needs it,
and every body has a size limit (`watus.core.security`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response

from trt_server.admission import Admission
from trt_server.engines import select_engine
from trt_server.engines.base import Engine, EngineError, SamplingParams
from trt_server.errors import ModelNotFoundAPIError, NotReadyError, install_error_handlers
from trt_server.generation import LLMMetrics
from trt_server.protocol import ChatCompletionRequest, CompletionRequest
from trt_server.schemas import check_json_schema
from trt_server.serving import ServerState, chat_completion, completion
from trt_server.settings import LLMSettings
from trt_server.templating import ChatTemplate
from watus.core import metrics as m
from watus.core.drain import drain_of, install_drain
from watus.core.memwatch import SwapWatch
from watus.core.security import install_security
from watus.core.timing import TURN_HEADER, clean_turn_id

log = logging.getLogger(__name__)


def _schema_validator(engine: Engine) -> Callable[[dict[str, Any]], None]:
    """A check that a JSON schema is valid and usable by this engine's guided decoding (ValueError if not)."""

    def check(schema: dict[str, Any]) -> None:
        check_json_schema(schema)
        engine.check_grammar(schema)

    return check


async def _warm_up(engine: Engine) -> None:
    ids = await asyncio.to_thread(engine.tokenizer.encode, "Hello", add_special=True)
    async for _ in engine.stream(ids, SamplingParams(max_tokens=2, temperature=0.0)):
        pass


async def _load(app: FastAPI, settings: LLMSettings) -> None:
    engine: Engine | None = None
    try:
        engine = select_engine(settings)
        await engine.load()
        if settings.warmup:
            await _warm_up(engine)
        tok = engine.tokenizer
        template = ChatTemplate(tok.chat_template, tok.bos_token, tok.eos_token)
        metrics: LLMMetrics = app.state.metrics
        app.state.llm = ServerState(
            settings=settings, engine=engine, template=template, metrics=metrics,
            admission=Admission(settings.max_concurrent, settings.queue_size, settings.queue_timeout_s, metrics),
            validate_schema=_schema_validator(engine), drain=drain_of(app),
        )
        log.info("model %s ready (%s)", engine.model_id, engine.info())
    except Exception as e:
        app.state.load_error = str(e)
        if isinstance(e, EngineError):
            # The message says what to set or install: one line for the operator, the chain at DEBUG.
            log.error("could not load the model: %s", e)
            log.debug("model load failure", exc_info=True)
        else:
            log.exception("could not load the model: %s", e)
        if engine is not None:
            await engine.close()
        callback = app.state.on_load_failure
        if callback is not None:
            callback(e)


def get_state(request: Request) -> ServerState:
    state: ServerState | None = request.app.state.llm
    if state is None:
        why = request.app.state.load_error or "the model is still loading"
        raise NotReadyError(f"Model not ready: {why}", headers={"Retry-After": "5"})
    return state


def turn_headers(turn: str | None) -> dict[str, str]:
    clean = clean_turn_id(turn)
    return {TURN_HEADER: clean} if clean else {}


State = Annotated[ServerState, Depends(get_state)]
TurnHeader = Annotated[str | None, Header(alias=TURN_HEADER)]


def _model_card(state: ServerState, name: str) -> dict[str, Any]:
    """One entry of `/v1/models` (also `GET /v1/models/{id}`): the served model under `name`."""
    return {"id": name, "object": "model", "created": state.created, "owned_by": "watus", "root": state.model_id,
            "max_model_len": state.engine.capabilities.max_context, "watus": state.engine.info()}


def create_app(settings: LLMSettings | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The LLM server app; `on_load_failure` lets the entry point stop the process when the model fails."""
    settings = settings or LLMSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.llm = None
        app.state.load_error = None
        app.state.on_load_failure = on_load_failure
        loader = asyncio.create_task(_load(app, settings))
        try:
            yield
        finally:
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            state: ServerState | None = app.state.llm
            if state is not None:
                await state.engine.close()

    app = FastAPI(title="Watus LLM server", version="0.1.0", lifespan=lifespan)
    app.state.registry = m.new_registry()
    app.state.memwatch = SwapWatch(name="llm")
    app.state.metrics = LLMMetrics(app.state.registry)
    install_error_handlers(app)
    install_drain(app, settings.drain_s)
    install_security(app, settings)

    async def chat(req: ChatCompletionRequest, request: Request, state: State,
                   x_watus_turn: TurnHeader = None) -> Response:
        return await chat_completion(state, req, request, turn_headers(x_watus_turn))

    async def completions(req: CompletionRequest, request: Request, state: State,
                          x_watus_turn: TurnHeader = None) -> Response:
        return await completion(state, req, request, turn_headers(x_watus_turn))

    async def models(state: State) -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(state, name) for name in state.model_names]}

    async def model(model_id: str, state: State) -> dict[str, Any]:
        if not state.accepts(model_id):
            raise ModelNotFoundAPIError(f"The model '{model_id}' does not exist; this server serves "
                                        f"'{state.model_id}'.", param="model")
        return _model_card(state, model_id)

    for prefix in ("/v1", ""):
        route = functools.partial(app.add_api_route, include_in_schema=bool(prefix))
        route(f"{prefix}/chat/completions", chat, methods=["POST"])
        route(f"{prefix}/completions", completions, methods=["POST"])
        route(f"{prefix}/models", models, methods=["GET"])
        route(f"{prefix}/models/{{model_id:path}}", model, methods=["GET"])

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        state: ServerState | None = request.app.state.llm
        if state is None:
            error = request.app.state.load_error
            return JSONResponse({"status": "error" if error else "loading", "error": error}, status_code=503)
        return JSONResponse({
            "status": "ok", "model": state.model_id, "engine": state.engine.capabilities.name,
            "waiting": state.admission.waiting, "memory": request.app.state.memwatch.check(),
        })

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = m.render(app.state.registry)
        return Response(body, media_type=content_type)

    return app

