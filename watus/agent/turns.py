"""One spoken reply, the same for the voice loop and `watus ask`: think, cut into sentences, speak.

The caller owns the turn (its record, its cancellation) and says how a sentence is spoken; this module
streams the reply from the agent, hands each sentence to `speak` the moment the cutter releases it, and
stamps the stages it sees on the turn's record (`llm_first_token`, `first_sentence`) on the one
monotonic clock. The caller stamps the stages it sees itself (speech end, ASR, scene, first audio,
playback), so `watus ask` and the turn log carry the same stage names and the same figures.

The LLM stream is closed the moment the reply is abandoned (`aclosing`): a barge-in cancels the task,
and the HTTP request to the LLM server ends then, not when the generator is garbage-collected.

Failures: an LLM that cannot answer (server down, HTTP error, a model run error) gets the spoken
apology; any other exception is a bug on the agent's side: logged with its traceback, recorded as
such, and apologised for without blaming the LLM.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
import openai
from pydantic_ai import Agent
from pydantic_ai.exceptions import AgentRunError
from pydantic_ai.messages import ModelMessage

from watus.agent.audio_client import AudioUnavailableError
from watus.agent.brain import Session, TurnDeps, stream_reply
from watus.agent.turnlog import TurnRecord
from watus.core.sentences import SentenceCutter

log = logging.getLogger(__name__)

APOLOGY = {
    "en": "Sorry, I cannot think right now. Please try again in a moment.",
    "pl": "Przepraszam, nie mogę teraz myśleć. Spróbuj za chwilę.",
}
BUG_APOLOGY = {
    "en": "Sorry, something went wrong on my side.",
    "pl": "Przepraszam, coś poszło nie tak po mojej stronie.",
}
#: What an LLM that cannot answer raises through pydantic-ai and the openai client.
LLM_ERRORS: tuple[type[BaseException], ...] = (openai.APIError, httpx.HTTPError, AgentRunError)

#: speak(sentence, final): hand one sentence to the speaker; `final` on the last of the reply. An empty
#: sentence with `final` only marks the end of the reply (its last sentence already went out).
Speak = Callable[[str, bool], Awaitable[None]]


async def speak_reply(agent: Agent[TurnDeps, str], session: Session, rec: TurnRecord, deps: TurnDeps, *,
                      language: str, sentence_max_chars: int, max_reply_chars: int, speak: Speak,
                      on_delta: Callable[[str], None] | None = None,
                      remember: Callable[[list[ModelMessage]], None] | None = None) -> None:
    """Stream the reply to `rec.transcript` into `speak`, sentence by sentence; fills `rec.reply`/`rec.error`.

    Raises `AudioUnavailableError` (from `speak`) and `CancelledError`; every other failure is handled.
    """
    cutter = SentenceCutter(sentence_max_chars, first_clause=True)
    reply: list[str] = []
    sent = 0

    async def out(sentence: str, final: bool) -> None:
        nonlocal sent
        rec.mark("first_sentence", time.monotonic_ns())
        await speak(sentence, final)
        sent += 1

    try:
        deltas = stream_reply(agent, session, rec.transcript, deps, max_reply_chars, remember)
        async with contextlib.aclosing(deltas):
            async for delta in deltas:
                if not delta:
                    continue
                rec.mark("llm_first_token", time.monotonic_ns())
                reply.append(delta)
                if on_delta is not None:
                    on_delta(delta)
                for sentence in cutter.feed(delta):
                    await out(sentence, False)
    except AudioUnavailableError:
        raise
    except LLM_ERRORS as e:
        rec.error = f"LLM: {type(e).__name__}: {e}"
        log.error("turn %s: the LLM failed (%s: %s); apologising", rec.turn_id, type(e).__name__, e)
        rec.reply = APOLOGY[language]
        await out(rec.reply, True)
        return
    except Exception as e:  # a bug of ours must not end the turn silently or blame the LLM
        log.exception("turn %s: the agent failed", rec.turn_id)
        rec.error = f"agent: {type(e).__name__}: {e}"
        rec.reply = BUG_APOLOGY[language]
        await out(rec.reply, True)
        return
    # The cutter holds a sentence until it sees the next one start, so the last sentence comes out of
    # flush() and carries the `final` mark that lets the speaker say when the reply is over.
    rest = cutter.flush()
    for i, sentence in enumerate(rest):
        await out(sentence, i == len(rest) - 1)
    if not rest and sent:
        await speak("", True)  # the last sentence went out before the reply ended: mark the end
    rec.reply = "".join(reply).strip()


async def think_then_speak(agent: Agent[TurnDeps, str], session: Session, rec: TurnRecord, deps: TurnDeps, *,
                           max_reply_chars: int, speak: Speak) -> None:
    """The sequential baseline: the whole reply first, then all of it to the speaker at once."""
    parts: list[str] = []
    async with contextlib.aclosing(stream_reply(agent, session, rec.transcript, deps, max_reply_chars)) as deltas:
        async for delta in deltas:
            if delta:
                rec.mark("llm_first_token", time.monotonic_ns())
                parts.append(delta)
    rec.reply = "".join(parts).strip()
    if rec.reply:
        rec.mark("first_sentence", time.monotonic_ns())
        await speak(rec.reply, True)
