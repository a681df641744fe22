"""The FastAPI app: `create_app(settings)`, a lifespan that loads and warms the models, thin routes.

Models load in a background task so `/health` answers (503, "loading") from the first second. Once
they are warm, the grabber and pipeline threads start and the routes only read what the pipeline
published: `GET /v1/scene` returns pre-serialised bytes, so it stays fast while inference runs.
Uploads (`POST /v1/detect`) run in their own single worker thread, a few at most waiting. The API key
and the body limits are `watus.core.security`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from vision.annotate import annotate, encode_jpeg
from vision.detector import Detector, select_detector
from vision.errors import (
    BadImageError,
    NoSceneError,
    NotReadyError,
    OverloadedError,
    StaleSceneError,
    TooLargeError,
    VisionError,
    document_errors,
    error_responses,
    install_error_handlers,
)
from vision.facedet import select_face_detector
from vision.faces import FaceAnalyzer
from vision.grabber import FrameGrabber, FrameSource
from vision.images import decode_image
from vision.metrics import VisionMetrics
from vision.pipeline import Pipeline, PipelineConfig, Published, SceneBoard, analyze_image
from vision.protocol import Health, Scene, SourceHealth
from vision.settings import VisionSettings
from vision.sources import source_factory
from vision.threads import lower_priority
from watus.core import metrics as m
from watus.core.bodylimit import Limit
from watus.core.memwatch import SwapWatch
from watus.core.security import install_security

log = logging.getLogger(__name__)

#: Uploads that may wait for the upload worker; more get 503.
MAX_PENDING_UPLOADS = 4
#: Multipart framing around an uploaded file (headers, boundaries) allowed beyond the image limit.
_MULTIPART_SLACK = 64 * 1024

_BINARY = {"schema": {"type": "string", "format": "binary"}}
#: One event of `GET /v1/scene/stream`, as an SSE-aware client (and schemathesis) reads it.
_SCENE_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
    {"const": "[DONE]"},
    {"type": "string", "contentMediaType": "application/json", "contentSchema": {"$ref": "#/components/schemas/Scene"}},
]}}}
#: What `POST /v1/detect` reads (by hand, so the OpenAPI is written out here): the image bytes as the
#: body, or a multipart form with the image in `file`.
_IMAGE_UPLOAD = {"requestBody": {"required": True, "description": "A JPEG, PNG, BMP or WebP image.", "content": {
    **{media: _BINARY for media in ("image/jpeg", "image/png", "image/bmp", "image/webp", "application/octet-stream")},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
}}}


@dataclass
class VisionState:
    detector: Detector
    faces: FaceAnalyzer | None
    grabber: FrameGrabber
    pipeline: Pipeline
    board: SceneBoard
    uploads: ThreadPoolExecutor
    pending_uploads: int = 0


def build_faces(settings: VisionSettings) -> FaceAnalyzer | None:
    if not settings.faces:
        return None
    return FaceAnalyzer(detector=select_face_detector(settings), age=settings.age_path(),
                        gender=settings.gender_path(), emotion=settings.emotion_path(), threads=1,
                        providers=tuple(settings.providers), min_face=settings.face_min_size)


def load_models(settings: VisionSettings) -> tuple[Detector, FaceAnalyzer | None]:
    """Load and warm every model (blocking: run in a worker thread)."""
    # ONNX Runtime's pool threads are made now and inherit this thread's niceness: inference then
    # yields the CPU to the event loop, which keeps GET /v1/scene fast on a small machine.
    lower_priority(settings.worker_nice)
    detector = select_detector(settings)
    detector.load()
    faces = build_faces(settings)
    if faces is not None:
        faces.load()
    if settings.warmup:
        blank = np.full((480, 640, 3), 114, np.uint8)
        for _ in range(2):  # the second run is the one at steady-state speed
            detector.detect(blank)
        if faces is not None:
            faces.warm()
    return detector, faces


async def _load(app: FastAPI, settings: VisionSettings, factory: Callable[[], FrameSource] | None) -> None:
    loaded: Detector | None = None
    try:
        started = time.perf_counter()
        detector, faces = await asyncio.to_thread(load_models, settings)
        loaded = detector
        metrics: VisionMetrics = app.state.metrics
        make_source = factory or source_factory(settings.source, settings.source_kind,
                                                camera_width=settings.camera_width,
                                                camera_height=settings.camera_height, camera_fps=settings.camera_fps)
        grabber = FrameGrabber(make_source, loop=settings.loop, pace_fps=settings.source_fps,
                               reconnect_min_s=settings.reconnect_min_s, reconnect_max_s=settings.reconnect_max_s,
                               on_drop=metrics.dropped.inc, on_reconnect=metrics.reconnects.inc,
                               nice=settings.worker_nice)
        config = PipelineConfig(faces=settings.faces, face_every_n=settings.face_every_n,
                                max_faces_per_frame=settings.max_faces_per_frame,
                                attribute_smoothing=settings.attribute_smoothing, track_iou=settings.track_iou,
                                track_max_missed=settings.track_max_missed, fps_window_s=settings.fps_window_s,
                                nice=settings.worker_nice)
        board: SceneBoard = app.state.board
        pipeline = Pipeline(grabber, detector, faces, config, board, metrics, settings.source)
        grabber.start()
        pipeline.start()
        app.state.vision = VisionState(detector, faces, grabber, pipeline, board,
                                       ThreadPoolExecutor(1, thread_name_prefix="vision-upload",
                                                          initializer=lower_priority,
                                                          initargs=(settings.worker_nice,)))
        log.info("vision ready in %.1f s: %s, faces %s, source %s", time.perf_counter() - started, detector.info(),
                 "on" if faces else "off", settings.source)
    except VisionError as e:  # a missing or unloadable model: one line that says what to do
        log.error("could not start the vision pipeline: %s", e)
        _load_failed(app, e, loaded)
    except Exception as e:  # anything else is a bug: keep its traceback
        log.exception("could not start the vision pipeline")
        _load_failed(app, e, loaded)


def _load_failed(app: FastAPI, error: Exception, loaded: Detector | None) -> None:
    """Report the error on /health, free the detector if it loaded, and tell the server (it stops)."""
    app.state.load_error = str(error)
    if loaded is not None:
        loaded.close()
    callback = app.state.on_load_failure
    if callback is not None:
        callback(error)


def get_state(request: Request) -> VisionState:
    state: VisionState | None = request.app.state.vision
    if state is None:
        why = request.app.state.load_error or "the models are still loading"
        raise NotReadyError(f"Vision not ready: {why}", headers={"Retry-After": "2"})
    return state


State = Annotated[VisionState, Depends(get_state)]


def _latest(state: VisionState) -> Published:
    item = state.board.latest
    if item is None:
        status = state.grabber.status()
        raise NoSceneError(f"No scene yet (source {status.state}: {status.last_error or 'waiting for frames'}).",
                           headers={"Retry-After": "1"})
    return item


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (never buffered whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"Upload of {int(declared):,} bytes is over the limit of {limit:,} bytes "
                            "(WATUS_VISION_MAX_UPLOAD_BYTES).", param="file")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"Upload is over the limit of {limit:,} bytes (WATUS_VISION_MAX_UPLOAD_BYTES).",
                                param="file")
        chunks.append(chunk)
    return b"".join(chunks)


async def _upload_bytes(request: Request, limit: int) -> bytes:
    """Image bytes of a raw body (any image content type) or of a multipart form's `file` field."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return await _read_body(request, limit)
    body = await _read_body(request, limit + _MULTIPART_SLACK)

    async def once() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=1, max_fields=8,
                                     max_part_size=limit).parse()
    except MultiPartException as e:
        raise BadImageError(f"Malformed multipart body: {e.message}", param="file") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadImageError("Multipart upload without a `file` field.", param="file", code="missing_file")
    data = await upload.read()
    if len(data) > limit:
        raise TooLargeError(f"Upload is over the limit of {limit:,} bytes (WATUS_VISION_MAX_UPLOAD_BYTES).",
                            param="file")
    return data


_MEMWATCH = SwapWatch(name="vision")


def _health(request: Request) -> JSONResponse:
    state: VisionState | None = request.app.state.vision
    if state is None:
        error = request.app.state.load_error
        body = Health(status="error" if error else "loading", error=error)
        return JSONResponse(body.model_dump(), status_code=503)
    src = state.grabber.status()
    source = SourceHealth(kind=src.kind, description=src.description, state=src.state, frames=src.frames,
                          dropped=src.dropped, reconnects=src.reconnects, failures=src.failures,
                          last_error=src.last_error,
                          retry_in_s=round(src.retry_in_s, 2) if src.retry_in_s is not None else None)
    request.app.state.metrics.source_up.set(1 if src.state == "ok" else 0)
    latest = state.board.latest
    age = (time.monotonic_ns() - latest.scene.captured_ns) / 1e6 if latest is not None else None
    body = Health(status="ok" if src.state in ("ok", "ended") else "degraded", detector=state.detector.info(),
                  faces=state.faces is not None, source=source, fps=round(state.pipeline.fps, 2),
                  last_frame_age_ms=round(age, 1) if age is not None else None, memory=_MEMWATCH.check())
    return JSONResponse(body.model_dump())


def create_app(settings: VisionSettings | None = None, *, source: Callable[[], FrameSource] | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The vision app. `source` replaces the frame source of the settings (tests: a fake camera)."""
    settings = settings or VisionSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.vision = None
        app.state.load_error = None
        app.state.on_load_failure = on_load_failure
        app.state.board.attach(asyncio.get_running_loop())
        loader = asyncio.create_task(_load(app, settings, source))
        try:
            yield
        finally:
            app.state.board.close()
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            state: VisionState | None = app.state.vision
            if state is not None:
                await asyncio.to_thread(_shutdown, state)

    app = FastAPI(title="Watus vision", version="0.1.0", lifespan=lifespan)
    app.state.registry = m.new_registry()
    app.state.metrics = VisionMetrics(app.state.registry)
    app.state.board = SceneBoard()
    app.state.vision = None
    app.state.load_error = None
    install_error_handlers(app)
    document_errors(app)
    install_security(app, settings, paths={"/v1/detect": Limit(
        settings.max_upload_bytes + _MULTIPART_SLACK, "WATUS_VISION_MAX_UPLOAD_BYTES, plus form framing",
        code=TooLargeError.code or "image_too_large", param="file")})

    @app.get("/v1/scene", response_model=Scene, responses=error_responses(400, 503))
    async def scene(state: State, max_age_ms: Annotated[float | None, Query(ge=0)] = None) -> Response:
        item = _latest(state)
        age_ms = (time.monotonic_ns() - item.scene.captured_ns) / 1e6
        if max_age_ms is not None and age_ms > max_age_ms:
            raise StaleSceneError(f"The latest scene is {age_ms:.0f} ms old, over max_age_ms={max_age_ms:g} "
                                  f"(source {state.grabber.status().state}).", param="max_age_ms",
                                  headers={"Retry-After": "1"})
        return Response(item.body, media_type="application/json", headers={"X-Scene-Age-Ms": f"{age_ms:.1f}"})

    @app.get("/v1/scene/stream", response_class=StreamingResponse, responses={
        200: {"description": "Server-sent events: `data: <Scene JSON>` per new scene, `data: [DONE]` at shutdown.",
              "content": {"text/event-stream": {"schema": _SCENE_EVENT}}}, **error_responses(400, 503)})
    async def scene_stream(state: State,
                           max_fps: Annotated[float | None, Query(gt=0, le=1000)] = None) -> StreamingResponse:
        interval = 1.0 / min(max_fps or settings.stream_max_fps, settings.stream_max_fps)

        async def events() -> AsyncIterator[bytes]:
            seq = -1
            while True:
                item = await state.board.wait_newer(seq, timeout=10.0)
                if state.board.closed:
                    break
                if item is None:
                    yield b": keep-alive\n\n"
                    continue
                seq = item.scene.seq
                yield b"data: " + item.body + b"\n\n"
                await asyncio.sleep(interval)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/frame.jpg", response_class=Response, responses={
        200: {"description": "The latest frame (`annotated`: with its boxes).", "content": {"image/jpeg": _BINARY}},
        **error_responses(400, 503)})
    async def frame_jpg(state: State, annotated: Annotated[bool, Query()] = False) -> Response:
        item = _latest(state)
        jpeg = item.jpeg.get(annotated)
        if jpeg is None:
            image = item.image
            assert image is not None
            quality = settings.jpeg_quality

            def encode() -> bytes:
                return encode_jpeg(annotate(image, item.scene) if annotated else image, quality)

            jpeg = await asyncio.to_thread(encode)
            item.jpeg[annotated] = jpeg  # racing encoders write the same bytes
        return Response(jpeg, media_type="image/jpeg", headers={"X-Frame-Id": str(item.scene.frame_id),
                                                                "Cache-Control": "no-store"})

    @app.post("/v1/detect", response_model=Scene, openapi_extra=_IMAGE_UPLOAD,
              responses=error_responses(400, 413, 415, 503))
    async def detect(state: State, request: Request) -> Response:
        metrics: VisionMetrics = app.state.metrics
        if state.pending_uploads >= MAX_PENDING_UPLOADS:
            metrics.detect_requests.labels("busy").inc()
            raise OverloadedError("Too many images waiting; retry shortly.", headers={"Retry-After": "1"})
        state.pending_uploads += 1
        try:
            data = await _upload_bytes(request, settings.max_upload_bytes)
            loop = asyncio.get_running_loop()
            image = await loop.run_in_executor(state.uploads, decode_image, data, settings.max_image_pixels)
            result = await loop.run_in_executor(state.uploads, analyze_image, image, state.detector, state.faces)
        except Exception:
            metrics.detect_requests.labels("rejected").inc()
            raise
        finally:
            state.pending_uploads -= 1
        metrics.detect_requests.labels("ok").inc()
        return Response(result.model_dump_json().encode(), media_type="application/json")

    @app.get("/health", response_model=Health, responses={
        503: {"model": Health, "description": "The models are loading, or failed to load (`error`)."}})
    async def health(request: Request) -> JSONResponse:
        return _health(request)

    @app.get("/metrics", response_class=Response, responses={
        200: {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        state: VisionState | None = app.state.vision
        if state is not None:
            app.state.metrics.source_up.set(1 if state.grabber.status().state == "ok" else 0)
        body, content_type = m.render(app.state.registry)
        return Response(body, media_type=content_type)

    return app


def _shutdown(state: VisionState) -> None:
    state.pipeline.stop()
    state.grabber.stop()
    state.uploads.shutdown(wait=True, cancel_futures=True)
    state.detector.close()
    if state.faces is not None:
        state.faces.close()
