"""The voice loop: the one owner of a spoken turn's lifecycle (start, barge-in, cancel, done).

The audio service reports facts (typed events: speech started, transcripts, audio synthesised and
played, interruptions) and obeys commands (say, stop); this loop decides. A `transcript` starts a
turn: look (vision), think (LLM, streamed) and send each sentence to the speaker the moment the
sentence cutter releases it (`watus.agent.turns`, the same code as `watus ask`). Barge-in is decided
here: speech that starts while the robot is talking, or a new utterance while a turn is still under
way, cancels the turn — the LLM stream is closed at once — and stops playback. A turn is over when the
speaker reports that its last text (`final`) has played, when it was interrupted, or when it had
nothing to say.

Talking over the robot: speech while it talks pauses playback in the audio service at once (a fact, not a
decision); the utterance's transcript decides here. Real words for the robot: barge-in — the turn is
cancelled, playback stopped, and the new utterance is the next turn. No words, or not for the robot
(`WATUS_AGENT_ADDRESSING`): the reply resumes where it paused, and the pause is a false interruption in
the turn's record. Ignored speech is an `ignored` event with its transcript, never a turn.

Preemptive replies (`WATUS_AGENT_PREEMPTIVE`): a `speculative_transcript` at the person's first pause
starts the turn at once, with its audio held by the speaker. The final `transcript` of the same
utterance confirms it (same words: the held audio plays at once, a hit) or not (different words, or
`speech_resumed` first: the reply is thrown away — LLM stream closed, held audio dropped — a miss, and
the turn starts again from the final text). A thrown-away reply writes no record and is not remembered;
the utterance's record counts it.

Prefix warm-up (`WATUS_AGENT_WARM_PREFIX`, `watus.agent.warmup`): when someone starts to speak and the
robot is not replying, the LLM server prefills the next prompt up to the question.

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
from pydantic_ai.messages import ModelMessage

from watus.agent.addressing import Addressee
from watus.agent.audio_client import AudioUnavailableError
from watus.agent.brain import Session, TurnDeps, scene_json
from watus.agent.scene import VisionClient
from watus.agent.settings import AgentSettings, Pipeline
from watus.agent.turnlog import TurnLog, TurnRecord
from watus.agent.turns import speak_reply, think_then_speak
from watus.agent.warmup import PrefixWarmer
from watus.core.timing import new_turn_id
from watus.core.wire.audio import (
    AudioEvent,
    Interrupted,
    PlaybackFinished,
    PlaybackPaused,
    PlaybackResumed,
    PlaybackStarted,
    SpeculativeTranscript,
    SpeechResumed,
    SpeechStarted,
    Transcript,
    TtsAudio,
    WakeWord,
)
from watus.core.words import words

log = logging.getLogger(__name__)

#: How long to wait for the speaker to finish a reply before writing the record anyway.
PLAYBACK_GRACE_S = 120.0


class Speaker(Protocol):
    """What the loop needs of the audio service (`AudioClient`; a recorder in the unit tests)."""

    async def say(self, text: str, turn_id: str, *, final: bool = False, interrupt: bool = False,
                  sequential: bool = False, hold: bool = False) -> Any: ...

    async def release(self, turn_id: str) -> None: ...

    async def stop(self) -> bool: ...

    async def resume(self) -> bool: ...

    def events(self) -> AsyncIterator[AudioEvent]: ...


@dataclass
class _Turn:
    record: TurnRecord
    task: asyncio.Task[None] | None = None
    spoke: bool = False  # at least one say request went out
    done: asyncio.Event = field(default_factory=asyncio.Event)
    held: bool = False  # preemptive and not yet confirmed: its audio is held by the speaker
    discarded: bool = False  # a thrown-away preemptive reply: no record
    memory: list[ModelMessage] | None = None  # a preemptive reply's messages, remembered once confirmed
    audio_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # say/release in the order sent


def same_words(a: str, b: str) -> bool:
    """Whether two transcripts say the same (case, punctuation and spacing aside)."""
    return words(a) == words(b)


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
        self._resumed: dict[str, int] = {}  # utterance -> when its speech last resumed after a pause
        self._misses: dict[str, int] = {}  # utterance -> preemptive replies thrown away
        self._stop_echoes = 0  # `interrupted` events still to come for stops this loop commanded
        self._warmer = (PrefixWarmer(agent, session, vision, settings.language.value, self._notify)
                        if settings.warm_prefix and vision is not None else None)
        self.addressee = Addressee(settings)
        self.turns_done = 0
        self.ignored = 0

    @property
    def current_turn(self) -> str | None:
        """The id of the turn under way, if any."""
        return self._current.record.turn_id if self._current is not None else None

    async def run(self) -> None:
        """Forever (until cancelled): read audio events and act on them."""
        try:
            async for ev in self._audio.events():
                try:
                    await self.handle(ev)
                except Exception:  # one bad event never ends the loop
                    log.exception("voice loop: event %s failed", ev.type)
        finally:
            if self._warmer is not None:
                self._warmer.cancel()

    def _notify(self, kind: str, data: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind, data)

    async def text_turn(self, text: str) -> str:
        """A typed message handled as if it had been spoken (the dashboard's text box); its turn id."""
        await self._barge_in("new message")
        now = time.monotonic_ns()
        self._start_turn(Transcript(t_ns=now, turn_id=new_turn_id(), text=text, t0_ns=now, speech_started_ns=now,
                                    speech_end_captured_ns=now, audio_start_s=0.0, audio_end_s=0.0),
                         source="text", addressed="text")
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
        if isinstance(ev, SpeculativeTranscript):
            await self._speculative(ev)
        elif isinstance(ev, SpeechResumed):
            self._resumed[ev.turn_id] = ev.t_ns
            turn = self._current
            if turn is not None and turn.held and turn.record.turn_id == ev.turn_id:
                await self._discard(turn, "speech resumed")
        elif isinstance(ev, Transcript):
            await self._transcript(ev)
        elif isinstance(ev, SpeechStarted):
            # Speech over the robot pauses playback in the audio service; the transcript decides here.
            # Only a say request that asked the speaker to stop by itself has already ended the turn.
            if ev.barge_in:
                await self._barge_in("speech while speaking", stop_audio=False)
            elif self._warmer is not None and ev.turn_id and (self._current is None or self._current.done.is_set()):
                self._warmer.start(ev.turn_id)  # not while replying: the LLM is busy and the memory will change
        elif isinstance(ev, WakeWord):
            self.addressee.woke(ev.phrase, ev.t_ns)
        elif isinstance(ev, (PlaybackPaused, PlaybackResumed)):
            self._on_pause(ev)
        elif isinstance(ev, Interrupted):
            if ev.reason == "stop" and self._stop_echoes > 0:
                self._stop_echoes -= 1  # the echo of a stop this loop commanded: already acted on
                return
            turn = self._current
            if turn is not None and ev.turn_id in (None, turn.record.turn_id):
                await self._barge_in(f"interrupted ({ev.reason})", stop_audio=False)
        elif isinstance(ev, (TtsAudio, PlaybackStarted, PlaybackFinished)) and ev.turn_id in self._turns:
            self._on_playback(self._turns[ev.turn_id], ev)

    async def _transcript(self, ev: Transcript) -> None:
        turn = self._current
        verdict = self.addressee.check(ev.text, ev.t_ns)
        if turn is not None and turn.held and not turn.done.is_set():
            if turn.record.turn_id == ev.turn_id and same_words(turn.record.transcript, ev.text):
                await self._confirm(turn, ev)
                return
            await self._discard(turn, "the final transcript differs")
            turn = self._current
        self._resumed.pop(ev.turn_id, None)
        if not verdict.for_robot:
            self._ignore(ev, verdict.how)
            if turn is not None and not turn.done.is_set() and turn.record.pauses and verdict.how != "no_words":
                await self._audio.resume()  # it paused for speech that was not for the robot: play on
            return
        if turn is not None and turn.record.pauses and "outcome" not in turn.record.pauses[-1]:
            turn.record.pauses[-1]["outcome"] = "barge_in"
        await self._barge_in("new utterance")
        self._start_turn(ev, addressed=verdict.how)

    def _ignore(self, ev: Transcript, why: str) -> None:
        self.ignored += 1
        self._misses.pop(ev.turn_id, None)
        log.info("utterance %s ignored (%s): %r", ev.turn_id, why, ev.text)
        self._notify("ignored", {"turn_id": ev.turn_id, "text": ev.text, "reason": why,
                                 "barge_in": ev.barge_in})

    def _on_pause(self, ev: PlaybackPaused | PlaybackResumed) -> None:
        turn = self._turns.get(ev.turn_id or "") or self._current
        if turn is None:
            return
        rec = turn.record
        if isinstance(ev, PlaybackPaused):
            rec.pauses.append({"onset_captured_ns": ev.onset_captured_ns, "paused_ns": ev.t_ns,
                               "stop_ms": ev.stop_ms})
        elif rec.pauses:
            rec.pauses[-1].update(outcome=ev.reason, paused_ms=ev.paused_ms)
            rec.false_interruptions += 1

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

    async def _speculative(self, ev: SpeculativeTranscript) -> None:
        if not self._s.preemptive or self._s.pipeline is Pipeline.sequential or not ev.text.strip():
            return
        if ev.pause_ns < self._resumed.get(ev.turn_id, 0):
            return  # the person went on after that pause: this text is not the utterance's
        if not self.addressee.check(ev.text, ev.t_ns).for_robot:
            return  # the final transcript decides whether it is for the robot
        turn = self._current
        if turn is not None and not turn.done.is_set():
            if not turn.held:
                return  # a confirmed reply is under way; the final transcript decides about barge-in
            if turn.record.turn_id == ev.turn_id and same_words(turn.record.transcript, ev.text):
                return
            await self._discard(turn, "a newer speculative transcript")
        record = TurnRecord(turn_id=ev.turn_id, session_id=self.session.id, transcript=ev.text.strip(),
                            language=ev.language, mode=self._s.pipeline.value, preemptive="pending",
                            preemptive_misses=self._misses.get(ev.turn_id, 0))
        record.speech_end_captured_ns = ev.speech_end_captured_ns
        self._launch(_Turn(record, held=True, memory=[]), "preemptive")

    async def _confirm(self, turn: _Turn, ev: Transcript) -> None:
        """The final transcript says what the speculative one said: play the held reply now."""
        rec = turn.record
        rec.preemptive = "hit"
        rec.barge_in = ev.barge_in
        rec.addressed = self.addressee.check(ev.text, ev.t_ns).how
        self._misses.pop(rec.turn_id, None)  # counted in this record already
        rec.t_ns["speech_end"], rec.t_ns["asr_done"] = ev.t0_ns, ev.t_ns
        rec.audio_ms = dict(ev.stages_ms)
        if ev.speech_end_captured_ns is not None:
            rec.speech_end_captured_ns = ev.speech_end_captured_ns
        log.info("turn %s: preemptive reply confirmed", rec.turn_id)
        self._notify("preemptive", {"turn_id": rec.turn_id, "outcome": "hit"})
        async with turn.audio_lock:
            turn.held = False
            if turn.spoke:
                try:
                    await self._audio.release(rec.turn_id)
                except AudioUnavailableError as e:
                    rec.error = f"audio: {e}"
        if turn.memory:
            self.session.add_turn(turn.memory)
        turn.memory = None

    async def _discard(self, turn: _Turn, why: str) -> None:
        """Throw a preemptive reply away: close its LLM stream, drop its held audio, write no record."""
        utterance = turn.record.turn_id
        self._misses[utterance] = self._misses.get(utterance, 0) + 1
        log.info("turn %s: preemptive reply thrown away (%s)", utterance, why)
        self._notify("preemptive", {"turn_id": utterance, "outcome": "miss", "reason": why})
        turn.discarded = True
        turn.done.set()
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()
        if turn.spoke:
            await self._stop_audio()
        if self._current is turn:
            self._current = None
        self._turns.pop(utterance, None)

    def _start_turn(self, ev: Transcript, source: str = "voice", addressed: str | None = None) -> None:
        record = TurnRecord(turn_id=ev.turn_id, session_id=self.session.id, transcript=ev.text.strip(),
                            language=ev.language, mode=self._s.pipeline.value, source=source,
                            preemptive_misses=self._misses.pop(ev.turn_id, 0), barge_in=ev.barge_in,
                            addressed=addressed)
        record.mark("speech_end", ev.t0_ns)
        record.mark("asr_done", ev.t_ns)
        if ev.speech_end_captured_ns is not None:
            record.speech_end_captured_ns = ev.speech_end_captured_ns
        record.audio_ms = dict(ev.stages_ms)
        self._launch(_Turn(record), source)

    def _launch(self, turn: _Turn, source: str) -> None:
        record = turn.record
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
            await self._stop_audio()

    def audio_lost(self, why: str) -> None:
        """The audio service's event stream broke: a turn that already spoke lost its audio with the process.

        It is recorded as failed at once (not left waiting for a playback that will never be reported);
        a turn that has not spoken yet goes on, and its first sentence finds the audio back or fails then.
        """
        turn = self._current
        if turn is None or turn.done.is_set() or not turn.spoke:
            return
        turn.record.error = f"audio: the audio service went away mid-turn ({why})"
        log.error("turn %s: %s", turn.record.turn_id, turn.record.error)
        turn.done.set()
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()

    async def _stop_audio(self) -> None:
        if await self._audio.stop():
            self._stop_echoes += 1

    async def _run_turn(self, turn: _Turn) -> None:
        rec = turn.record
        try:
            await self._think_and_speak(turn)
            if not turn.spoke:
                turn.done.set()  # nothing to play
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(turn.done.wait(), PLAYBACK_GRACE_S)
        except asyncio.CancelledError:
            rec.interrupted = rec.error is None  # else failed (`audio_lost`), not interrupted
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
        if self._warmer is not None:
            warmed = await self._warmer.settled(rec.turn_id)
            rec.warm_prefix_ms = warmed if warmed is not None else rec.warm_prefix_ms
        sequential = self._s.pipeline is Pipeline.sequential

        async def speak(sentence: str, final: bool) -> None:
            async with turn.audio_lock:  # a release must not overtake a say that was held
                turn.spoke = True
                await self._audio.say(sentence, rec.turn_id, final=final, sequential=sequential, hold=turn.held)

        def remember(messages: list[ModelMessage]) -> None:
            if turn.memory is not None:  # preemptive: remembered once confirmed
                turn.memory.extend(messages)
            else:
                self.session.add_turn(messages)

        if sequential:
            await think_then_speak(self._agent, self.session, rec, deps, max_reply_chars=self._s.max_reply_chars,
                                   speak=speak)
        else:
            await speak_reply(self._agent, self.session, rec, deps, language=self._s.language.value,
                              sentence_max_chars=self._s.sentence_max_chars,
                              max_reply_chars=self._s.max_reply_chars, speak=speak, remember=remember,
                              on_delta=lambda d: self._notify("reply_delta", {"turn_id": rec.turn_id, "text": d}))

    async def _finish(self, turn: _Turn) -> None:
        rec = turn.record
        if self._turns.get(rec.turn_id) is turn:
            self._turns.pop(rec.turn_id, None)
        if self._current is turn:
            self._current = None
        if turn.discarded:
            return  # the utterance's next reply may still use this warm-up
        if self._warmer is not None:
            self._warmer.forget(rec.turn_id)
        if not rec.error:
            self.addressee.keep_open(time.monotonic_ns())
        # mkdir, rotation, write and fsync are disk work: a worker thread, never the event loop. A log that
        # cannot be written is reported by TurnLog itself (once, and in /health); the loop goes on.
        await asyncio.to_thread(self._log.append, rec)
        self.turns_done += 1
        if self._on_record is not None:
            self._on_record(rec)
        self._notify("turn", rec.as_json())
        log.info("turn %s: e2e %s ms, interrupted %s, reply %.60r", rec.turn_id, rec.e2e_ms, rec.interrupted,
                 rec.reply)
