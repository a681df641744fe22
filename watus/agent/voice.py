"""The voice loop: audio events in, spoken replies out, one turn record per turn.

On a `transcript` the loop starts a turn: look (vision), think (LLM, streamed), and send each sentence
to the speaker the moment the sentence cutter releases it. Barge-in (`interrupted`, or speech starting
while the robot talks) cancels the turn's generation and stops playback. The audio service's events
also carry the times the agent cannot see itself (end of speech t0, first audio, playback start and
end), so the turn record holds every stage on the one machine-wide monotonic clock and e2e = t1 − t0.

Faults never end the loop: audio away → reconnect with backoff; LLM away → a spoken apology; vision
away → the model is told it cannot see. Each turn's record is written even when it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import Agent

from watus.agent.audio_client import AudioClient, AudioUnavailableError
from watus.agent.brain import Session, TurnDeps, scene_json, stream_reply
from watus.agent.scene import VisionClient
from watus.agent.sentences import SentenceCutter
from watus.agent.settings import AgentSettings, Pipeline
from watus.agent.turnlog import TurnLog, TurnRecord
from watus.timing import new_turn_id

log = logging.getLogger(__name__)

APOLOGY = {
    "en": "Sorry, I cannot think right now. Please try again in a moment.",
    "pl": "Przepraszam, nie mogę teraz myśleć. Spróbuj za chwilę.",
}
#: How long to wait for the speaker to finish a reply before writing the record anyway.
PLAYBACK_GRACE_S = 120.0


@dataclass
class _Turn:
    record: TurnRecord
    task: asyncio.Task[None] | None = None
    sent_all: bool = False
    final_sent: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class VoiceLoop:
    def __init__(self, settings: AgentSettings, agent: Agent[TurnDeps, str], session: Session,
                 vision: VisionClient | None, audio: AudioClient, turn_log: TurnLog,
                 on_record: Callable[[TurnRecord], None] | None = None) -> None:
        self._s = settings
        self._agent = agent
        self.session = session
        self._vision = vision
        self._audio = audio
        self._log = turn_log
        self._on_record = on_record
        self._current: _Turn | None = None
        self._turns: dict[str, _Turn] = {}
        self.turns_done = 0

    async def run(self) -> None:
        """Forever (until cancelled): read audio events and act on them."""
        async for ev in self._audio.events():
            try:
                await self._on_event(ev)
            except Exception:  # one bad event never ends the loop
                log.exception("voice loop: event %s failed", ev.get("type"))

    async def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        turn_id = ev.get("turn_id")
        if kind == "transcript":
            await self._barge_in("new utterance")
            if str(ev.get("text", "")).strip():
                self._start_turn(ev)
        elif kind == "speech_started" and ev.get("barge_in"):
            await self._barge_in("speech while speaking")
        elif kind == "interrupted":
            await self._barge_in(str(ev.get("reason", "interrupted")), stop_audio=False)
        elif turn_id in self._turns:
            turn = self._turns[turn_id]
            at = int(ev.get("t_ns", time.monotonic_ns()))
            if kind == "tts_audio":
                turn.record.mark("tts_first_audio", at)
            elif kind == "playback_started":
                turn.record.mark("tts_first_audio", at)
                turn.record.mark("playback_start", at)
            elif kind == "playback_finished":
                turn.record.t_ns["playback_end"] = at
                # Without a final sentence (a reply cut at the length limit) the next idle speaker ends it.
                if ev.get("final") or (turn.sent_all and not turn.final_sent):
                    turn.done.set()

    def _start_turn(self, ev: dict[str, Any]) -> None:
        turn_id = str(ev.get("turn_id") or new_turn_id())
        record = TurnRecord(turn_id=turn_id, session_id=self.session.id, transcript=str(ev["text"]).strip(),
                            language=ev.get("language"), mode=self._s.pipeline.value)
        record.mark("speech_end", int(ev.get("t0_ns") or ev.get("t_ns") or time.monotonic_ns()))
        record.mark("asr_done", int(ev.get("t_ns") or time.monotonic_ns()))
        stages = ev.get("stages_ms")
        if isinstance(stages, dict):
            record.audio_ms = {str(k): float(v) for k, v in stages.items() if isinstance(v, (int, float))}
        turn = _Turn(record)
        self._turns[turn_id] = turn
        self._current = turn
        turn.task = asyncio.create_task(self._run_turn(turn), name=f"turn-{turn_id}")

    async def _barge_in(self, why: str, stop_audio: bool = True) -> None:
        turn = self._current
        if turn is None or turn.done.is_set():
            return
        log.info("barge-in on turn %s: %s", turn.record.turn_id, why)
        turn.record.interrupted = True
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()
        if stop_audio:
            await self._audio.stop()
        turn.done.set()

    async def _run_turn(self, turn: _Turn) -> None:
        rec = turn.record
        try:
            await self._think_and_speak(turn)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(turn.done.wait(), PLAYBACK_GRACE_S)
        except asyncio.CancelledError:
            rec.interrupted = True
        except Exception as e:  # the loop outlives any failure of a turn
            rec.error = f"{type(e).__name__}: {e}"
            log.error("turn %s failed: %s", rec.turn_id, rec.error)
        finally:
            self._finish(turn)

    async def _think_and_speak(self, turn: _Turn) -> None:
        rec = turn.record
        view = await self._vision.look(rec.turn_id) if self._vision is not None else None
        rec.mark("scene_fetched", time.monotonic_ns())
        rec.scene = scene_json(view)
        deps = TurnDeps(vision=self._vision, view=view, language=self._s.language.value, turn_id=rec.turn_id)
        if self._s.pipeline is Pipeline.sequential:
            await self._think_then_speak(turn, deps)
            return
        cutter = SentenceCutter(self._s.sentence_max_chars)
        reply: list[str] = []
        try:
            async for delta in stream_reply(self._agent, self.session, rec.transcript, deps, self._s.max_reply_chars):
                if not delta:
                    continue
                rec.mark("llm_first_token", time.monotonic_ns())
                reply.append(delta)
                for sentence in cutter.feed(delta):
                    await self._speak(rec, sentence)
        except (asyncio.CancelledError, AudioUnavailableError):
            raise
        except Exception as e:
            rec.error = f"LLM: {type(e).__name__}: {e}"
            log.error("turn %s: the LLM failed (%s); apologising", rec.turn_id, e)
            cutter.flush()
            reply = [APOLOGY[self._s.language.value]]
            await self._speak(rec, reply[0], final=True)
            turn.final_sent = turn.sent_all = True
            rec.reply = reply[0]
            return
        # The cutter holds a sentence until it sees the next one start, so the last sentence comes out
        # of flush() and can carry the `final` mark that lets the speaker say when the turn is over.
        rest = cutter.flush()
        for i, sentence in enumerate(rest):
            await self._speak(rec, sentence, final=i == len(rest) - 1)
        turn.final_sent = bool(rest)
        turn.sent_all = True
        rec.reply = "".join(reply).strip()
        if not rec.reply:
            turn.done.set()  # nothing to play

    async def _think_then_speak(self, turn: _Turn, deps: TurnDeps) -> None:
        """The sequential baseline: the whole reply, then all of its speech synthesised, then playback."""
        rec = turn.record
        parts: list[str] = []
        async for delta in stream_reply(self._agent, self.session, rec.transcript, deps, self._s.max_reply_chars):
            if delta:
                rec.mark("llm_first_token", time.monotonic_ns())
                parts.append(delta)
        rec.reply = "".join(parts).strip()
        if not rec.reply:
            turn.sent_all = True
            turn.done.set()
            return
        rec.mark("first_sentence", time.monotonic_ns())
        await self._audio.say(rec.reply, rec.turn_id, final=True, sequential=True)
        turn.final_sent = turn.sent_all = True

    async def _speak(self, rec: TurnRecord, sentence: str, final: bool = False) -> None:
        rec.mark("first_sentence", time.monotonic_ns())
        await self._audio.say(sentence, rec.turn_id, final=final)

    def _finish(self, turn: _Turn) -> None:
        self._turns.pop(turn.record.turn_id, None)
        if self._current is turn:
            self._current = None
        try:
            self._log.write(turn.record)
        except OSError as e:
            log.error("could not write the turn log: %s", e)
        self.turns_done += 1
        if self._on_record is not None:
            self._on_record(turn.record)
        log.info("turn %s: e2e %s ms, interrupted %s, reply %.60r", turn.record.turn_id, turn.record.e2e_ms,
                 turn.record.interrupted, turn.record.reply)
