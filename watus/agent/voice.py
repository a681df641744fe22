"""The voice loop: the one owner of a spoken turn's lifecycle (start, barge-in, cancel, done).

The audio service reports facts (typed events: speech started, transcripts, audio synthesised and
played, interruptions) and obeys commands (say, stop); this loop decides. A `transcript` starts a
turn: look (vision), think (LLM, streamed) and send each sentence to the speaker the moment the
sentence cutter releases it (`watus.agent.turns`, the same code as `watus ask`). Barge-in is decided
here: speech that starts while the robot is talking, or a new utterance while a turn is still under
way, cancels the turn — the LLM stream is closed at once — and stops playback. A turn is over when the
speaker reports that its last text (`final`) has played, when it was interrupted, or when it had
nothing to say.

Every stage is stamped on the machine-wide monotonic clock: end of speech (t0) and ASR from the audio
service's own stamps, the scene, LLM and first sentence here, first audio and playback from the audio
events; so the turn record holds e2e = t1 − t0. Faults never end the loop: audio away → the turn is
recorded with its error and the event stream reconnects; LLM away → a spoken apology; vision away →
the model is told it cannot see. Each turn's record is written (off the event loop) even when it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic_ai import Agent

from watus.agent.audio_client import AudioUnavailableError
from watus.agent.brain import Session, TurnDeps, scene_json
from watus.agent.scene import VisionClient
from watus.agent.settings import AgentSettings, Pipeline
from watus.agent.turnlog import TurnLog, TurnRecord
from watus.agent.turns import speak_reply, think_then_speak
from watus.core.timing import new_turn_id
from watus.core.wire.audio import (
    AudioEvent,
    Interrupted,
    PlaybackFinished,
    PlaybackStarted,
    SpeechStarted,
    Transcript,
    TtsAudio,
)

log = logging.getLogger(__name__)

#: How long to wait for the speaker to finish a reply before writing the record anyway.
PLAYBACK_GRACE_S = 120.0


class Speaker(Protocol):
    """What the loop needs of the audio service (`AudioClient`; a recorder in the unit tests)."""

    async def say(self, text: str, turn_id: str, *, final: bool = False, interrupt: bool = False,
                  sequential: bool = False) -> Any: ...

    async def stop(self) -> None: ...

    def events(self) -> AsyncIterator[AudioEvent]: ...


@dataclass
class _Turn:
    record: TurnRecord
    task: asyncio.Task[None] | None = None
    spoke: bool = False  # at least one say request went out
    done: asyncio.Event = field(default_factory=asyncio.Event)


class VoiceLoop:
    def __init__(self, settings: AgentSettings, agent: Agent[TurnDeps, str], session: Session,
                 vision: VisionClient | None, audio: Speaker, turn_log: TurnLog,
                 on_record: Callable[[TurnRecord], None] | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._s = settings
        self._agent = agent
        self.session = session
        self._vision = vision
        self._audio = audio
        self._log = turn_log
        self._on_record = on_record
        #: Observer of everything the loop sees and does (the dashboard's hub): (event name, data).
        self._on_event = on_event
        self._current: _Turn | None = None
        self._turns: dict[str, _Turn] = {}
        self.turns_done = 0

    @property
    def current_turn(self) -> str | None:
        """The id of the turn under way, if any."""
        return self._current.record.turn_id if self._current is not None else None

    async def run(self) -> None:
        """Forever (until cancelled): read audio events and act on them."""
        async for ev in self._audio.events():
            try:
                await self.handle(ev)
            except Exception:  # one bad event never ends the loop
                log.exception("voice loop: event %s failed", ev.type)

    def _notify(self, kind: str, data: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind, data)

    async def text_turn(self, text: str) -> str:
        """A typed message handled as if it had been spoken (the dashboard's text box); its turn id."""
        await self._barge_in("new message")
        now = time.monotonic_ns()
        self._start_turn(Transcript(t_ns=now, turn_id=new_turn_id(), text=text, t0_ns=now, speech_started_ns=now,
                                    speech_end_captured_ns=now, audio_start_s=0.0, audio_end_s=0.0),
                         source="text")
        assert self._current is not None
        return self._current.record.turn_id

    async def stop(self, why: str = "stop requested") -> bool:
        """Stop the turn under way (the dashboard's button): cancel it and silence the speaker."""
        busy = self._current is not None and not self._current.done.is_set()
        await self._barge_in(why)
        return busy

    async def handle(self, ev: AudioEvent) -> None:
        """Act on one event of the audio service."""
        self._notify(ev.type, ev.model_dump())
        if isinstance(ev, Transcript):
            await self._barge_in("new utterance")
            if ev.text.strip():
                self._start_turn(ev)
        elif isinstance(ev, SpeechStarted):
            if ev.during_playback or ev.barge_in:
                await self._barge_in("speech while speaking", stop_audio=not ev.barge_in)
        elif isinstance(ev, Interrupted):
            turn = self._current
            if turn is not None and ev.turn_id in (None, turn.record.turn_id):
                await self._barge_in(f"interrupted ({ev.reason})", stop_audio=False)
        elif isinstance(ev, (TtsAudio, PlaybackStarted, PlaybackFinished)) and ev.turn_id in self._turns:
            self._on_playback(self._turns[ev.turn_id], ev)

    def _on_playback(self, turn: _Turn, ev: TtsAudio | PlaybackStarted | PlaybackFinished) -> None:
        rec = turn.record
        if isinstance(ev, TtsAudio):
            rec.mark("tts_first_audio", ev.t_ns)
        elif isinstance(ev, PlaybackStarted):
            rec.mark("tts_first_audio", ev.t_ns)
            rec.mark("playback_start", ev.t_ns)
        else:
            if ev.played_ms > 0 or "playback_end" not in rec.t_ns:
                rec.t_ns["playback_end"] = ev.t_ns
            if ev.final:
                turn.done.set()

    def _start_turn(self, ev: Transcript, source: str = "voice") -> None:
        record = TurnRecord(turn_id=ev.turn_id, session_id=self.session.id, transcript=ev.text.strip(),
                            language=ev.language, mode=self._s.pipeline.value, source=source)
        record.mark("speech_end", ev.t0_ns)
        record.mark("asr_done", ev.t_ns)
        if ev.speech_end_captured_ns is not None:
            record.speech_end_captured_ns = ev.speech_end_captured_ns
        record.audio_ms = dict(ev.stages_ms)
        turn = _Turn(record)
        self._turns[record.turn_id] = turn
        self._current = turn
        turn.task = asyncio.create_task(self._run_turn(turn), name=f"turn-{record.turn_id}")
        self._notify("turn_started", {"turn_id": record.turn_id, "transcript": record.transcript, "source": source})

    async def _barge_in(self, why: str, stop_audio: bool = True) -> None:
        turn = self._current
        if turn is None or turn.done.is_set():
            return
        log.info("barge-in on turn %s: %s", turn.record.turn_id, why)
        turn.record.interrupted = True
        turn.record.interrupt_reason = why
        turn.done.set()
        self._notify("barge_in", {"turn_id": turn.record.turn_id, "reason": why})
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()  # closes the LLM stream at once (aclosing in watus.agent.turns)
        if stop_audio and turn.spoke:
            await self._audio.stop()

    async def _run_turn(self, turn: _Turn) -> None:
        rec = turn.record
        try:
            await self._think_and_speak(turn)
            if not turn.spoke:
                turn.done.set()  # nothing to play
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(turn.done.wait(), PLAYBACK_GRACE_S)
        except asyncio.CancelledError:
            rec.interrupted = True
        except AudioUnavailableError as e:
            rec.error = f"audio: {e}"
            log.error("turn %s: %s", rec.turn_id, rec.error)
        except Exception as e:  # the loop outlives any failure of a turn
            rec.error = f"agent: {type(e).__name__}: {e}"
            log.exception("turn %s failed", rec.turn_id)
        finally:
            await self._finish(turn)

    async def _think_and_speak(self, turn: _Turn) -> None:
        rec = turn.record
        view = await self._vision.look(rec.turn_id) if self._vision is not None else None
        rec.mark("scene_fetched", time.monotonic_ns())
        rec.scene = scene_json(view)
        deps = TurnDeps(vision=self._vision, view=view, language=self._s.language.value, turn_id=rec.turn_id)
        sequential = self._s.pipeline is Pipeline.sequential

        async def speak(sentence: str, final: bool) -> None:
            turn.spoke = True
            await self._audio.say(sentence, rec.turn_id, final=final, sequential=sequential)

        if sequential:
            await think_then_speak(self._agent, self.session, rec, deps, max_reply_chars=self._s.max_reply_chars,
                                   speak=speak)
        else:
            await speak_reply(self._agent, self.session, rec, deps, language=self._s.language.value,
                              sentence_max_chars=self._s.sentence_max_chars,
                              max_reply_chars=self._s.max_reply_chars, speak=speak,
                              on_delta=lambda d: self._notify("reply_delta", {"turn_id": rec.turn_id, "text": d}))

    async def _finish(self, turn: _Turn) -> None:
        rec = turn.record
        self._turns.pop(rec.turn_id, None)
        if self._current is turn:
            self._current = None
        # mkdir, rotation, write and fsync are disk work: a worker thread, never the event loop.
        try:
            await asyncio.to_thread(self._log.write, rec)
        except OSError as e:
            log.error("could not write the turn log %s: %s", self._log.path, e)
        self.turns_done += 1
        if self._on_record is not None:
            self._on_record(rec)
        self._notify("turn", rec.as_json())
        log.info("turn %s: e2e %s ms, interrupted %s, reply %.60r", rec.turn_id, rec.e2e_ms, rec.interrupted,
                 rec.reply)
