"""The agent process (`python -m watus`): the voice loop plus a small HTTP API.

`GET /health` reports whether the LLM, vision and audio services answer and whether the audio event
stream is connected; the agent itself is healthy once its loop runs, because a robot whose camera is
unplugged should still talk. A turn log that cannot be written (full disk, read-only folder) makes it
`degraded` (still 200: the robot talks on) with `turn_log.error`, until a record is written again.
`GET /metrics` has each turn stage's latency and e2e as histograms.
`POST /v1/chat` runs a text turn through the same brain (the CLI's `watus chat` and tests use it).
`GET /` is the live dashboard (`watus.agent.dashboard`). Errors have the OpenAI-style body of the other
services; with an API key set every endpoint but /health and /metrics needs it (`watus.core.security`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from watus.agent.audio_client import AudioClient
from watus.agent.brain import Session, TurnDeps, build_agent, stream_reply
from watus.agent.dashboard import router as dashboard_router
from watus.agent.hub import Hub
from watus.agent.monitor import Monitor, probe
from watus.agent.scene import VisionClient
from watus.agent.settings import AgentSettings
from watus.agent.turnlog import STAGES, TurnLog, TurnRecord
from watus.agent.voice import VoiceLoop
from watus.core import metrics as m
from watus.core.api_errors import BadRequestError, NotReadyError, install_error_handlers
from watus.core.config import reveal
from watus.core.memwatch import SwapWatch
from watus.core.security import install_security
from watus.core.timing import new_turn_id
from watus.core.wire import WireError

log = logging.getLogger(__name__)


class ChatRequest(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    new_session: bool = False
    stream: bool = False


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = m.new_registry()
        self.e2e = m.latency_histogram("watus_turn_e2e_seconds", "End of speech to playback start (t1 - t0).",
                                       self.registry)
        self.stage = m.latency_histogram("watus_turn_stage_seconds", "Each stage after end of speech.",
                                         self.registry, ("stage",))
        self.perceived = m.latency_histogram("watus_turn_perceived_seconds", "True end of speech (capture of the "
                                             "last speech frame) to playback start: what a person waits.",
                                             self.registry)
        self.turns = m.counter("watus_turns", "Finished turns.", self.registry, ("outcome",))
        self.preemptive = m.counter("watus_preemptive", "Preemptive replies: hit (confirmed by the final "
                                    "transcript) or miss (thrown away).", self.registry, ("outcome",))
        self.ignored = m.counter("watus_ignored_speech", "Utterances that were not a turn: not addressed to the "
                                 "robot, no words, or only the wake word.", self.registry, ("reason",))
        self.false_interruptions = m.counter("watus_false_interruptions", "Pauses of the robot's speech that "
                                             "resumed (the speech was no words, or not for it).", self.registry)
        self.warm_prefix = m.counter("watus_warm_prefix", "Prompt prefix warm-ups while someone spoke: done or "
                                     "failed.", self.registry, ("outcome",))
        self.invalid = m.counter("watus_wire_invalid", "Messages from another process that did not match their "
                                 "contract (skipped, never defaulted).", self.registry, ("source", "type"))

    def invalid_from(self, source: str) -> Callable[[WireError], None]:
        return lambda e: self.invalid.labels(source, e.kind).inc()

    def observe(self, rec: TurnRecord) -> None:
        outcome = "error" if rec.error else "interrupted" if rec.interrupted else "ok"
        self.turns.labels(outcome).inc()
        if rec.e2e_ms is not None:
            self.e2e.observe(rec.e2e_ms / 1000)
        if rec.perceived_ms is not None:
            self.perceived.observe(max(0.0, rec.perceived_ms / 1000))
        if rec.false_interruptions:
            self.false_interruptions.inc(rec.false_interruptions)
        if rec.preemptive == "hit":
            self.preemptive.labels("hit").inc()
        if rec.preemptive_misses:
            self.preemptive.labels("miss").inc(rec.preemptive_misses)
        t0 = rec.t_ns.get("speech_end")
        for stage in STAGES[1:]:
            if t0 is not None and stage in rec.t_ns:
                self.stage.labels(stage).observe(max(0.0, (rec.t_ns[stage] - t0) / 1e9))


class AgentState:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.metrics = AgentMetrics()
        self.memwatch = SwapWatch(name="agent")
        self.vision = VisionClient(settings.vision_url, settings.service_timeout_s, settings.scene_max_age_ms,
                                   on_invalid=self.metrics.invalid_from("vision"),
                                   api_key=reveal(settings.vision_api_key))
        self.audio = AudioClient(settings.audio_url, settings.service_timeout_s,
                                 on_invalid=self.metrics.invalid_from("audio"), api_key=reveal(settings.audio_api_key))
        self.http = httpx.AsyncClient()
        self.hub = Hub()
        self.monitor = Monitor(self.hub, self.vision, {"llm": settings.llm_url, "vision": settings.vision_url,
                                                       "audio": settings.audio_url})
        self.agent = build_agent(settings)
        self.session = Session(new_turn_id(), settings.memory_turns)
        self.turn_log = TurnLog(settings.turn_log, settings.turn_log_max_bytes, settings.turn_log_backups)
        self.loop = VoiceLoop(settings, self.agent, self.session, self.vision, self.audio, self.turn_log,
                              on_record=self.metrics.observe, on_event=self._on_event)
        self.audio.on_lost = self.loop.audio_lost

    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "ignored":
            self.metrics.ignored.labels(str(data.get("reason", ""))).inc()
        elif kind == "warm_prefix":
            self.metrics.warm_prefix.labels(str(data.get("outcome", ""))).inc()
        self.hub.publish(kind, data)


class UpstreamError(NotReadyError):
    type = "upstream_unavailable"


def get_state(request: Request) -> AgentState:
    state: AgentState | None = request.app.state.agent
    if state is None:
        raise NotReadyError("The agent is starting; try again shortly.", code="agent_starting",
                            headers={"Retry-After": "1"})
    return state


State = Annotated[AgentState, Depends(get_state)]


async def _warm_llm(state: AgentState) -> None:
    """One 1-token turn so the LLM server has the persona and tools prefilled (cached) before anyone talks."""
    try:
        deps = TurnDeps(vision=None, view=None, language=state.settings.language.value)
        await state.agent.run("Hi", deps=deps, model_settings={"max_tokens": 1})
        log.info("LLM prefix warmed")
    except Exception as e:  # the LLM may not be up yet; the first real turn then pays the prefill
        log.info("LLM warm-up skipped: %s", e)


def dashboard_url(settings: AgentSettings, key: str | None = None) -> str:
    """Where the dashboard is (with the key to open it, when one is needed)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}/" + (f"?key={quote(key, safe='')}" if key else "")


async def _health_of(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    got = await probe(http, url)
    return {"ok": got["ok"], "status": got["status"]}


def create_app(settings: AgentSettings | None = None, voice_loop: bool = True) -> FastAPI:
    settings = settings or AgentSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AgentState(settings)
        await asyncio.to_thread(state.turn_log.check)  # a log that cannot be written shows in /health at once
        app.state.agent = state
        tasks = [asyncio.create_task(_warm_llm(state)), asyncio.create_task(state.monitor.run(), name="monitor")]
        if voice_loop:
            tasks.append(asyncio.create_task(state.loop.run(), name="voice-loop"))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            state.hub.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.vision.aclose()
            await state.audio.aclose()
            await state.http.aclose()

    app = FastAPI(title="Watus agent", version="0.1.0", lifespan=lifespan)
    app.state.agent = None
    install_error_handlers(app, logger=log)
    # The dashboard page is the login path: `/?key=` once, then its cookie stands for the key (EventSource).
    install_security(app, settings, login_paths=("/",))
    app.include_router(dashboard_router(get_state))

    @app.get("/health")
    async def health(state: State) -> JSONResponse:
        s = state.settings
        llm, vision, audio = await asyncio.gather(*(_health_of(state.http, u)
                                                    for u in (s.llm_url, s.vision_url, s.audio_url)))
        turn_log = state.turn_log.health()
        return JSONResponse({
            "status": "ok" if turn_log["ok"] else "degraded", "llm": llm, "vision": vision, "audio": audio,
            "turn_log": turn_log,
            "audio_events": "connected" if state.audio.connected else (state.audio.last_error or "connecting"),
            "turns": state.loop.turns_done, "session": state.session.id, "memory": state.memwatch.check(),
        })

    @app.get("/metrics")
    async def metrics(state: State) -> Response:
        body, content_type = m.render(state.metrics.registry)
        return Response(body, media_type=content_type)

    @app.post("/v1/session/new")
    async def new_session(state: State) -> dict[str, str]:
        state.session.clear()
        state.session.id = new_turn_id()
        return {"session": state.session.id}

    @app.post("/v1/chat")
    async def chat(req: ChatRequest, state: State) -> Response:
        if not req.text.strip():
            raise BadRequestError("`text` is empty.", param="text", code="empty_input")
        if req.new_session:
            state.session.clear()
        view = await state.vision.look()
        deps = TurnDeps(vision=state.vision, view=view, language=state.settings.language.value)
        deltas = stream_reply(state.agent, state.session, req.text, deps, state.settings.max_reply_chars)
        if req.stream:
            async def body() -> AsyncIterator[bytes]:
                async with contextlib.aclosing(deltas):
                    try:
                        async for d in deltas:
                            yield d.encode()
                    except Exception as e:  # headers are sent: the failure ends the text, marked as such
                        log.error("chat stream failed: %s: %s", type(e).__name__, e)
                        yield f"\n[error: the LLM failed: {type(e).__name__}]\n".encode()
            return StreamingResponse(body(), media_type="text/plain; charset=utf-8")
        try:
            text = "".join([d async for d in deltas])
        except Exception as e:  # the LLM is down or failing: a peer's outage, not the client's error
            raise UpstreamError(f"The LLM failed: {type(e).__name__}: {e}", code="llm_unavailable",
                                headers={"Retry-After": "2"}) from e
        return JSONResponse({"reply": text, "session": state.session.id,
                             "scene": None if view.scene is None else {"age_ms": view.age_ms, "stale": view.stale},
                             "vision_error": view.error})

    return app
