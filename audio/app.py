"""The FastAPI app of the audio process: `create_app(settings)`, a lifespan that loads and warms the models.

Models load in a background task so `/health` answers (503 "loading") from the first second; the
`/v1/*` routes answer 503 until they are ready. A load failure is logged with what to do, reported by
`/health`, and passed to `on_load_failure` so the entry point can exit non-zero. Tests may hand in
preloaded models, a microphone factory or a speaker (the hardware edge); nothing else differs. The API
key and the body limits are `watus.core.security`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

from audio.asr.base import AsrError
from audio.devices import SourceFactory
from audio.devices.base import AudioSink, DeviceError
from audio.errors import NotReadyError, PayloadTooLargeError, install_error_handlers
from audio.events import EventBus
from audio.metrics import AudioMetrics
from audio.protocol import SayRequest, SayResponse, SpeechRequest, StopResponse
from audio.runtime import AudioRuntime, Models, load_models
from audio.serving import AudioState, check_text, resolve_voice, speech, transcribe_upload
from audio.settings import AudioSettings
from audio.tts.base import TtsError
from audio.turn_model import TurnModelError
from watus.core import metrics as m
from watus.core.bodylimit import Limit
from watus.core.memwatch import SwapWatch
from watus.core.security import install_security
from watus.core.timing import TURN_HEADER, clean_turn_id
from watus.core.wire.audio import ReleaseRequest, ReleaseResponse, ResumeResponse, StatusEvent

log = logging.getLogger(__name__)

#: Seconds between SSE keep-alive comments (proxies close idle streams).
SSE_KEEPALIVE_S = 15.0


def _asr_facts(models: Models) -> tuple[str, bool, frozenset[str]]:
    engine = models.asr.engine
    from audio.asr.faster_whisper import language_codes

    return engine.model_id, engine.multilingual, language_codes()


async def _load(app: FastAPI, settings: AudioSettings, preloaded: Models | None,
                source_factory: SourceFactory | None, sink: AudioSink | None) -> None:
    models: Models | None = preloaded
    runtime: AudioRuntime | None = None
    try:
        if models is None:
            models = await load_models(settings, app.state.metrics)
            app.state.owned_models = models
        runtime = AudioRuntime(settings, models, app.state.bus, app.state.metrics, source_factory=source_factory,
                               sink=sink)
        app.state.runtime = runtime
        await runtime.start()
        model_id, multilingual, languages = _asr_facts(models)
        app.state.audio = AudioState(settings, models, runtime, app.state.bus, app.state.metrics, model_id,
                                     multilingual, languages)
        log.info("audio service ready on %s:%d", settings.host, settings.port)
    except Exception as e:
        app.state.load_error = str(e)
        if isinstance(e, (AsrError, TtsError, DeviceError, TurnModelError)):  # model or device: one line
            log.error("could not start the audio service: %s", e)
        else:  # a bug: keep the traceback
            log.exception("could not start the audio service: %s", e)
        callback = app.state.on_load_failure
        if callback is not None:
            callback(e)


def get_state(request: Request) -> AudioState:
    state: AudioState | None = request.app.state.audio
    if state is None:
        why = request.app.state.load_error or "the models are still loading"
        raise NotReadyError(f"Audio service not ready: {why}", headers={"Retry-After": "2"})
    return state


def turn_headers(turn: str | None) -> dict[str, str]:
    clean = clean_turn_id(turn)
    return {TURN_HEADER: clean} if clean else {}


State = Annotated[AudioState, Depends(get_state)]
TurnHeader = Annotated[str | None, Header(alias=TURN_HEADER)]


def create_app(settings: AudioSettings | None = None, *, models: Models | None = None,
               source_factory: SourceFactory | None = None, sink: AudioSink | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    settings = settings or AudioSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.audio = None
        app.state.runtime = None
        app.state.owned_models = None
        app.state.load_error = None
        app.state.on_load_failure = on_load_failure
        app.state.bus = EventBus(asyncio.get_running_loop(), settings.events_queue_size,
                                 on_drop=lambda n: app.state.metrics.events_dropped.inc(n))
        loader = asyncio.create_task(_load(app, settings, models, source_factory, sink))
        try:
            yield
        finally:
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            app.state.bus.close()
            if app.state.runtime is not None:
                await app.state.runtime.close()
            if app.state.owned_models is not None:
                app.state.owned_models.close()

    app = FastAPI(title="Watus audio service", version="0.1.0", lifespan=lifespan)
    app.state.registry = m.new_registry()
    app.state.metrics = AudioMetrics(app.state.registry)
    install_error_handlers(app)
    # The upload's own limit, plus room for the form around the file; every other body has max_body_bytes.
    install_security(app, settings, paths={"/v1/audio/transcriptions": Limit(
        settings.max_upload_bytes + 64 * 1024, "WATUS_AUDIO_MAX_UPLOAD_BYTES, plus form framing",
        code=PayloadTooLargeError.code or "file_too_large", param="file")})

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        state: State,
        file: Annotated[UploadFile, File(description="WAV, FLAC, MP3 or OGG audio")],
        model: Annotated[str, Form()] = "whisper-1",
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float, Form()] = 0.0,
        hotwords: Annotated[str | None, Form(description="Watus: words to favour (default: the setting)")] = None,
        granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
        x_watus_turn: TurnHeader = None,
    ) -> Response:
        return await transcribe_upload(state, file, response_format, language, prompt, temperature, hotwords,
                                       granularities or [], turn_headers(x_watus_turn))

    @app.post("/v1/audio/speech")
    async def audio_speech(req: SpeechRequest, state: State, x_watus_turn: TurnHeader = None) -> Response:
        return await speech(state, req, turn_headers(x_watus_turn))

    @app.post("/v1/say", status_code=202)
    async def say(req: SayRequest, state: State, x_watus_turn: TurnHeader = None) -> JSONResponse:
        # An empty text is allowed only as the end-of-turn marker (`final`): the agent sends it when the
        # last sentence of a reply already went out without knowing it was the last.
        text = "" if req.final and not req.text.strip() else check_text(req.text, state.settings.tts_max_chars,
                                                                          "text")
        voice = resolve_voice(state, req.voice)
        speaker = state.runtime.speaker
        assert speaker is not None
        turn = req.turn_id or clean_turn_id(x_watus_turn)
        barge_in = state.settings.barge_in if req.barge_in is None else req.barge_in
        result: SayResponse = await speaker.say(text, voice, req.speed, turn, req.interrupt, req.final, req.sequential,
                                                barge_in=barge_in, hold=req.hold)
        return JSONResponse(result.model_dump(), status_code=202, headers={TURN_HEADER: result.turn_id})

    @app.post("/v1/stop")
    async def stop(state: State) -> StopResponse:
        speaker = state.runtime.speaker
        assert speaker is not None
        return await speaker.stop()

    @app.post("/v1/resume")
    async def resume(state: State) -> ResumeResponse:
        """Play on after a pause (the agent heard the speech was not for the robot)."""
        speaker = state.runtime.speaker
        assert speaker is not None
        return ResumeResponse(resumed=speaker.resume("request"))

    @app.post("/v1/release")
    async def release(req: ReleaseRequest, state: State) -> ReleaseResponse:
        """Play a turn held by `say` with `hold` (the agent confirmed its preemptive reply)."""
        speaker = state.runtime.speaker
        assert speaker is not None
        released, chunks = speaker.release(req.turn_id)
        return ReleaseResponse(turn_id=req.turn_id, released=released, chunks=chunks)

    @app.get("/v1/events")
    async def events(request: Request, state: State) -> StreamingResponse:
        sub = state.bus.subscribe()

        async def stream() -> AsyncIterator[str]:
            with sub:
                yield StatusEvent(t_ns=time.monotonic_ns(), **_health_body(request.app)).sse()
                while not sub.ended:
                    ev = await sub.next(SSE_KEEPALIVE_S)
                    if ev is not None:
                        yield ev.sse()
                    elif not sub.ended:
                        yield ": keepalive\n\n"
                yield "data: [DONE]\n\n"  # the service is stopping

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/voices")
    async def voices(state: State) -> dict[str, Any]:
        return {"default": state.models.voices.default.name, "voices": state.models.voices.names()}

    @app.get("/v1/models")
    async def models_list(state: State) -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": state.asr_model_id, "object": "model", "owned_by": "watus", "kind": "asr"},
            {"id": state.models.voices.default.name, "object": "model", "owned_by": "watus", "kind": "tts"},
        ]}

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        if request.app.state.audio is None:
            error = request.app.state.load_error
            return JSONResponse({"status": "error" if error else "loading", "error": error}, status_code=503)
        body = _health_body(request.app)
        request.app.state.audio.runtime.service_ready()  # the virtual room's talkers count from here
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = m.render(app.state.registry)
        return Response(body, media_type=content_type)

    return app


_MEMWATCH = SwapWatch(name="audio")


def _health_body(app: FastAPI) -> dict[str, Any]:
    state: AudioState | None = app.state.audio
    if state is None:
        return {"status": "loading"}
    runtime = state.runtime
    return {
        "status": "degraded" if runtime.degraded else "ok",
        "asr": {"model": state.asr_model_id, "multilingual": state.multilingual, **state.models.load_ms},
        "tts": {"default_voice": state.models.voices.default.name, "voices": len(state.models.voices.names())},
        "vad": state.settings.vad_engine.value,
        **runtime.health(),
        "events_clients": state.bus.subscribers,
        "memory": _MEMWATCH.check(),
    }
