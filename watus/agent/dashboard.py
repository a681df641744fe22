"""The live dashboard at `GET /`: one page served by the agent itself, no build step, no outside assets.

The page reads one SSE stream (`GET /v1/dashboard/events`, the hub: audio events, turns, reply text as
it streams, health, machine and scene snapshots) and the camera through the agent
(`GET /v1/dashboard/frame.jpg`, the vision service's annotated frame, boxes drawn there), so it needs
nothing but the agent's own origin and keeps working with any subset of services up. State changes are
POSTs: `POST /v1/turns` (a typed message, handled as if spoken) and `POST /v1/stop`.

Safe by default: the agent listens on 127.0.0.1, and off loopback it needs an API key to start at all
(`watus.core.security`). With a key (`WATUS_AGENT_API_KEY`, else `WATUS_API_KEY`) every endpoint but
`/health` and `/metrics` needs it: `Authorization: Bearer <key>` for scripts, or `/?key=<key>` once in a
browser — the page then keeps it in a SameSite=Strict, HttpOnly cookie (an `EventSource` cannot send a
header), so no other site can use it and no link needs it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from watus.core.api_errors import BadRequestError, error_body
from watus.core.config import auth_headers, reveal

if TYPE_CHECKING:
    from watus.agent.app import AgentState

#: Served as they are; the page is these three files.
STATIC = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
SSE_KEEPALIVE_S = 10.0


class TextTurn(BaseModel):
    text: str = Field(min_length=1, max_length=2000, description="What the person would have said.")


def _static(name: str) -> bytes:
    return (resources.files("watus.agent") / "static" / name).read_bytes()


def router(get_state: Callable[[Request], AgentState]) -> APIRouter:
    r = APIRouter()

    @r.get("/", include_in_schema=False)
    async def page() -> Response:
        body = await asyncio.to_thread(_static, "dashboard.html")
        return Response(body, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    @r.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @r.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:
            return JSONResponse(error_body(f"no such file: {name}", "invalid_request_error", "name", "not_found"),
                                status_code=404)
        return Response(await asyncio.to_thread(_static, name), media_type=STATIC[name])

    @r.get("/v1/dashboard/events")
    async def events(request: Request) -> StreamingResponse:
        state = get_state(request)
        queue = state.hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"
                while True:
                    try:
                        frame = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if frame is None:
                        return
                    yield frame
            finally:
                state.hub.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @r.get("/v1/dashboard/frame.jpg")
    async def frame(request: Request) -> Response:
        state = get_state(request)
        try:
            got = await state.http.get(state.settings.vision_url.rstrip("/") + "/v1/frame.jpg",
                                       params={"annotated": "1"}, timeout=2.0,
                                       headers=auth_headers(reveal(state.settings.vision_api_key)))
        except httpx.HTTPError as e:
            return JSONResponse(error_body(f"vision service not reachable ({type(e).__name__})", "unavailable",
                                           None, "vision_down"), status_code=503)
        if got.status_code != 200:
            return Response(got.content, status_code=got.status_code, media_type=got.headers.get("content-type"))
        return Response(got.content, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @r.post("/v1/turns", status_code=202)
    async def text_turn(req: TextTurn, request: Request) -> dict[str, Any]:
        """A typed message, answered and spoken by the robot as if it had been heard."""
        state = get_state(request)
        if not req.text.strip():
            raise BadRequestError("text must not be empty.", param="text", code="empty_input")
        return {"turn_id": await state.loop.text_turn(req.text.strip())}

    @r.post("/v1/stop")
    async def stop(request: Request) -> dict[str, Any]:
        """Stop talking: the turn under way is cancelled and the speaker silenced."""
        state = get_state(request)
        stopped = await state.loop.stop("stop button")
        if not stopped:
            await state.audio.stop()  # whatever else is playing
        return {"stopped": stopped}

    return r
