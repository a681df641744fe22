"""Prefilling the next prompt while the person speaks (`WATUS_AGENT_WARM_PREFIX`).

When someone starts to speak and the robot is not replying, the voice loop asks for a warm-up: the LLM
server prefills the next prompt up to the question (`brain.warm_prefix`: persona, tools, memory, the scene
line), so the turn's own request prefills only the question's tokens. One warm-up at a time. A turn waits
(at most `WARM_WAIT_S`) for one still under way: the server would otherwise give its request a second
slot, without that cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic_ai import Agent

from watus.agent.brain import Session, TurnDeps, warm_prefix
from watus.agent.scene import VisionClient

log = logging.getLogger(__name__)

#: How long a turn waits for the prefix warm-up still under way (it then prefills only the question).
WARM_WAIT_S = 3.0
#: Warm-ups remembered for utterances that have not become a turn yet; more are utterances that never will.
KEEP = 64


class PrefixWarmer:
    def __init__(self, agent: Agent[TurnDeps, str], session: Session, vision: VisionClient, language: str,
                 notify: Callable[[str, dict[str, Any]], None]) -> None:
        self._agent, self._session, self._vision, self._language = agent, session, vision, language
        self._notify = notify
        self._task: asyncio.Task[None] | None = None  # the warm-up under way
        self._ms: dict[str, float] = {}  # utterance -> its warm-up's time to the first token

    def start(self, utterance: str) -> None:
        """Warm up for `utterance`, unless a warm-up is still under way."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(utterance), name=f"warm-{utterance}")

    async def _run(self, utterance: str) -> None:
        t = time.monotonic_ns()
        try:
            view = await self._vision.look()  # the scene line is the point
            await warm_prefix(self._agent, self._session, view, self._language)
        except Exception as e:  # the turn itself reports an LLM that cannot answer
            log.debug("prefix warm-up for %s failed: %s: %s", utterance, type(e).__name__, e)
            self._notify("warm_prefix", {"turn_id": utterance, "outcome": "failed"})
            return
        ms = round((time.monotonic_ns() - t) / 1e6, 1)
        if len(self._ms) > KEEP:
            self._ms.clear()
        self._ms[utterance] = ms
        log.debug("prompt prefix warmed for %s in %.0f ms", utterance, ms)
        self._notify("warm_prefix", {"turn_id": utterance, "outcome": "done", "ms": ms})

    async def settled(self, utterance: str) -> float | None:
        """Wait (bounded, never cancelling it) for the warm-up under way; `utterance`'s warm-up ms, if any."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=WARM_WAIT_S)
        return self._ms.get(utterance)

    def forget(self, utterance: str) -> None:
        """The utterance's turn is recorded: its warm-up is of no more use."""
        self._ms.pop(utterance, None)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
