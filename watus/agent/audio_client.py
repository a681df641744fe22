"""The agent's side of the audio service: its event stream, `say` and `stop`.

The event stream is the voice loop's input; it is read with a reconnecting SSE reader because the
audio process may restart (systemd, `watus up`) and the agent must carry on when it comes back (`on_lost`
tells the voice loop that a stream broke, so the turn that was playing is failed rather than awaited). Every
event is validated against the contract (`watus.core.wire.audio`); one that does not validate is logged
with its type and counted (`on_invalid`), and skipped — never patched up with defaults.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from watus.core.config import auth_headers
from watus.core.timing import TURN_HEADER
from watus.core.wire import WireError
from watus.core.wire.audio import AudioEvent, SayRequest, parse_event

log = logging.getLogger(__name__)


class AudioUnavailableError(Exception):
    """The audio service did not take a request."""


class AudioClient:
    def __init__(self, base_url: str, timeout_s: float, on_invalid: Callable[[WireError], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, transport=transport,
                                       headers=auth_headers(api_key))
        self._on_invalid = on_invalid
        #: Told (with why) when a connected event stream breaks: what was playing is not reported any more.
        self.on_lost: Callable[[str], None] | None = None
        self.connected = False
        self.last_error: str | None = None

    async def say(self, text: str, turn_id: str, *, final: bool = False, interrupt: bool = False,
                  sequential: bool = False, hold: bool = False) -> dict[str, Any]:
        """Queue text for the speaker. The agent decides barge-in itself, so the speaker must not."""
        body = SayRequest(text=text, turn_id=turn_id, final=final, interrupt=interrupt, sequential=sequential,
                          barge_in=False, hold=hold).model_dump(exclude_none=True)
        try:
            r = await self._http.post("/v1/say", json=body, headers={TURN_HEADER: turn_id})
        except httpx.HTTPError as e:
            raise AudioUnavailableError(f"audio service not reachable ({type(e).__name__})") from e
        if r.status_code >= 400:
            raise AudioUnavailableError(f"audio service refused to speak: {r.status_code} {r.text[:200]}")
        return dict(r.json())

    async def release(self, turn_id: str) -> None:
        """Play a turn whose audio was held (its preemptive reply was confirmed)."""
        try:
            r = await self._http.post("/v1/release", json={"turn_id": turn_id}, headers={TURN_HEADER: turn_id})
        except httpx.HTTPError as e:
            raise AudioUnavailableError(f"audio service not reachable ({type(e).__name__})") from e
        if r.status_code >= 400:
            raise AudioUnavailableError(f"audio service refused to release: {r.status_code} {r.text[:200]}")

    async def resume(self) -> bool:
        """Play on after a pause (the speech that paused the robot was not for it); whether it was paused."""
        try:
            r = await self._http.post("/v1/resume")
            return bool(r.status_code == 200 and r.json().get("resumed"))
        except (httpx.HTTPError, ValueError) as e:
            log.warning("could not resume playback: %s", e)
            return False

    async def stop(self) -> bool:
        """Stop playback and drop what is queued; whether anything was stopped (then an `interrupted` follows)."""
        try:
            r = await self._http.post("/v1/stop")
            return bool(r.status_code == 200 and r.json().get("stopped"))
        except (httpx.HTTPError, ValueError) as e:
            log.warning("could not stop playback: %s", e)
            return False

    async def events(self, retry_max_s: float = 5.0) -> AsyncIterator[AudioEvent]:
        """Events forever, reconnecting with backoff; `connected` tells whether the stream is up."""
        delay = 0.2
        while True:
            try:
                async with self._http.stream("GET", "/v1/events", timeout=httpx.Timeout(None, connect=5.0)) as r:
                    if r.status_code != 200:
                        raise AudioUnavailableError(f"/v1/events answered {r.status_code}")
                    self.connected, self.last_error, delay = True, None, 0.2
                    async for line in r.aiter_lines():
                        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                            continue
                        try:
                            yield parse_event(line[5:].strip())
                        except WireError as e:
                            log.error("audio event skipped: %s (%.120s)", e, line)
                            if self._on_invalid is not None:
                                self._on_invalid(e)
                self.last_error = "the event stream ended"
            except (httpx.HTTPError, AudioUnavailableError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
            if self.connected and self.on_lost is not None:
                self.on_lost(self.last_error)
            self.connected = False
            log.warning("audio events unavailable (%s); retrying in %.1f s", self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(retry_max_s, delay * 2)

    async def aclose(self) -> None:
        await self._http.aclose()
