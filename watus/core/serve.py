"""Running a Watus service: uvicorn plus systemd's notify protocol, the same for all four processes.

READY=1 is sent once the service's own `GET /health` answers 200 — the one definition of "models loaded
and warmed" each service already has — so `watus-agent` (ordered after the others) starts only when they
can answer. WATCHDOG=1 comes from a task on the service's event loop: a blocked loop stops the pings and
systemd restarts the process. A model that fails to load stops the server with a non-zero status. SIGTERM
is a clean stop: STOPPING=1, the app's drain if it keeps one (`watus.core.drain`), uvicorn's graceful
shutdown, exit status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from types import FrameType

import httpx
import uvicorn
from fastapi import FastAPI

from watus.core import sdnotify
from watus.core.drain import drain_of

log = logging.getLogger(__name__)

LoadFailure = Callable[[BaseException], None]


async def _ready_when_healthy(server: uvicorn.Server, url: str, name: str) -> None:
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient(timeout=2.0) as http:
        while not server.should_exit:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/health")).status_code == 200:
                    sdnotify.ready(f"{name} ready")
                    log.info("%s ready at %s", name, url)
                    return
            await asyncio.sleep(0.2)


def serve(make_app: Callable[[LoadFailure], FastAPI], host: str, port: int, *, name: str,
          graceful_s: int = 10,
          make_server: Callable[[uvicorn.Config, FastAPI], uvicorn.Server] | None = None) -> int:
    """Serve until stopped; returns the process exit status (0, or 1 if loading or binding failed)."""
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_load_failure(exc: BaseException) -> None:
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    app = make_app(on_load_failure)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=graceful_s)
    server = make_server(config, app) if make_server is not None else uvicorn.Server(config)
    # STOPPING=1 when the stop is asked. SIGTERM (systemd's stop) first drains an app that keeps a `Drain`
    # (watus.core.drain); a second SIGTERM stops at once.
    handle_exit = server.handle_exit
    drain = drain_of(app)
    drain_asked = asyncio.Event()
    loop: list[asyncio.AbstractEventLoop] = []

    def stopping_then_exit(sig: int, frame: FrameType | None) -> None:
        sdnotify.stopping()
        if sig == signal.SIGTERM and drain is not None and loop and not drain_asked.is_set():
            loop[0].call_soon_threadsafe(drain_asked.set)
            return
        handle_exit(sig, frame)

    def stopped(sig: int, frame: FrameType | None) -> None:
        # uvicorn puts back the handler it found and raises the signal again once it has shut down; a stop
        # that was asked for is a clean exit (status 0), so that replay lands here and only stops.
        server.should_exit = True

    server.handle_exit = stopping_then_exit  # type: ignore[method-assign]
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{probe_host}:{port}"

    async def drain_then_exit() -> None:
        await drain_asked.wait()
        if drain is not None:
            await drain.run()
        handle_exit(signal.SIGTERM, None)

    async def main(srv: uvicorn.Server) -> None:
        loop.append(asyncio.get_running_loop())
        tasks = [asyncio.create_task(sdnotify.watchdog_loop(lambda: not failed)),
                 asyncio.create_task(_ready_when_healthy(srv, url, name)),
                 asyncio.create_task(drain_then_exit())]
        try:
            await srv.serve()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    signal.signal(signal.SIGTERM, stopped)
    asyncio.run(main(server))
    # `started` stays False when the port could not be bound.
    return 1 if failed or not server.started else 0
