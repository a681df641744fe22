"""The listening pipeline: microphone blocks → VAD → utterances → ASR → events.

Its own thread does the per-frame work (resampling, the VAD at ~0.3 ms a frame, segmentation), fed by a
bounded queue that the capture callback fills without ever blocking (overflow is dropped and counted).
Transcription goes to the ASR worker; its result is published from there. t0 of a turn is the moment
the segmenter declares end of speech, on `time.monotonic_ns()`.

Echo: in `aec` mode each block is echo-cancelled (`audio.aec`) before the VAD sees it, and the VAD keeps
its normal threshold while the robot talks; in `half` mode the segmenter's gates are raised while the
speaker is audible. Either way, speech heard while the robot talks (`barge_in_pause_ms` of it) pauses
playback at once; the utterance then decides: a transcript without words (or no utterance at all)
resumes it, a transcript with words is the agent's to act on (it stops the reply, or resumes it if
the speech was not for the robot), and with no decision in `barge_in_resume_ms` it resumes by itself.

At the first pause of an utterance (`asr_speculative_silence_ms`) a live stream starts transcribing
what it has, so that by the end of the end-of-speech silence the transcript is mostly done; if speech
resumes the speculative job is cancelled or ignored. The audio handed to ASR is the same either way
(the utterance up to `tail_ms` after its last speech frame); a long utterance's settled start may have
been transcribed while it was spoken, and then only the rest is left (`audio.incremental`).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from audio.aec import EchoCanceller
from audio.asr.base import TranscribeOptions
from audio.asr.faster_whisper import names_a_hotword
from audio.asr.runner import AsrRunner, Transcript
from audio.bargein import PausableSpeaker, PauseWatch
from audio.events import EventBus
from audio.farend import FarEnd
from audio.incremental import SettledPrefix, after_settled
from audio.metrics import AudioMetrics
from audio.overlap import OverlapRepair, repair_overlap
from audio.pcm import ASR_RATE, F32, StreamResampler, dbfs
from audio.segmenter import Dropped, Gate, Pause, Resume, Segmenter, SpeechEnd, SpeechStart, segmenter_config
from audio.settings import AudioSettings, EchoMode
from audio.turn_model import EndOfTurn
from audio.vad import Vad
from audio.wake import WakeDetector, listen_for_wake
from watus.core.timing import new_turn_id
from watus.core.wire.audio import (
    SpeculativeTranscript,
    SpeechEnded,
    SpeechResumed,
    SpeechStarted,
    TurnEnd,
)
from watus.core.wire.audio import Transcript as TranscriptEvent

log = logging.getLogger(__name__)

#: Half duplex: the far end's level is its loudest 20 ms in this window (the echo path's reach).
FAR_WINDOW_NS = 300_000_000


class SpeakerState(PausableSpeaker, Protocol):
    """What the listener needs of the speaker: is the robot talking, pause/resume, its own barge-in."""

    def talking(self, tail_ms: float = 0.0) -> bool: ...

    def interrupt_on_speech(self) -> bool: ...


@dataclass(frozen=True)
class _End:
    """Marker in the block queue: the input ended or the device restarted; close any utterance."""


@dataclass
class _Speculation:
    future: Future[Transcript]
    end: int
    stale: bool = False  # speech resumed: its transcript is not the utterance's


class Listener:
    def __init__(self, settings: AudioSettings, vad: Vad, asr: AsrRunner, bus: EventBus, metrics: AudioMetrics,
                 speaker: SpeakerState | None, options: TranscribeOptions,
                 end_of_turn: EndOfTurn | None = None, *, echo: EchoCanceller | None = None,
                 echo_mode: EchoMode = EchoMode.half, wake: WakeDetector | None = None,
                 far: FarEnd | None = None) -> None:
        self._settings = settings
        self._vad = vad
        self._asr = asr
        self._bus = bus
        self._metrics = metrics
        self._speaker = speaker
        self._options = options
        self._end_of_turn = end_of_turn
        self._echo = echo
        self._echo_mode = echo_mode
        self._far = far
        self._wake = wake
        self._pauses = PauseWatch(settings, speaker, vad.frame_samples) if speaker is not None else None
        self._repair = (OverlapRepair(taps=settings.aec_overlap_taps)
                        if echo is not None and settings.aec_overlap_repair else None)
        self._piece_options = dataclasses.replace(options, fit_window=True, hotword_check=False)
        self._speech_start_pos = 0
        self._utterance = ""  # id of the utterance in progress (its turn id, if the agent makes it one)
        self._decision: tuple[str, float | None, float | None] = ("silence", None, None)
        self._queue: queue.Queue[tuple[F32, int, int] | _End] = queue.Queue(settings.mic_queue_blocks)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.dropped_blocks = 0
        self.level_dbfs: float | None = None
        self.realtime = True
        self._seg = Segmenter(segmenter_config(settings, vad.frame_samples, True))
        self._prefix = SettledPrefix.of(settings, lambda a, o: asr.submit(a, o, source="mic"), self._seg.cfg)
        self._resampler: StreamResampler | None = None
        self._buf = np.zeros(0, np.float32)
        self._spec: _Speculation | None = None
        self._hold: int | None = None  # set by the ASR thread: the speculation ending here trails off
        self._speech_start_ns = 0
        self._barge_in = False
        # Maps a stream position (samples at 16 kHz) to the monotonic clock: the last block's end.
        self._clock_pos = 0
        self._clock_ns = 0

    # --- producer side (capture thread): never blocks ---------------------------------------------------

    def feed(self, block: F32, rate: int, t_ns: int) -> None:
        try:
            self._queue.put_nowait((block, rate, t_ns))
        except queue.Full:
            self.dropped_blocks += 1
            self._metrics.dropped_frames.labels("queue_full").inc(len(block))

    def end_of_input(self) -> None:
        """Close the utterance in progress (input ended, or the device failed and will be reopened)."""
        try:
            self._queue.put_nowait(_End())
        except queue.Full:
            # Make room: losing one block of a stream that has ended anyway beats losing the marker.
            self._queue.get_nowait()
            self._queue.put_nowait(_End())

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def in_speech(self) -> bool:
        return self._seg.in_speech

    # --- the listener thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if isinstance(item, _End):
                    self._flush()
                else:
                    self._process(*item)
            except Exception:  # one bad block must not end listening for good
                log.exception("listener failed on a block; continuing")

    def _flush(self) -> None:
        if self._resampler is not None:
            tail = self._resampler(np.zeros(0, np.float32), last=True)
            self._buf = np.concatenate([self._buf, tail])
            self._resampler = None
        self._frames()
        for ev in self._seg.flush():
            self._handle(ev)
        self._seg = Segmenter(self._seg.cfg)
        self._vad.reset()
        self._buf = np.zeros(0, np.float32)

    def _process(self, block: F32, rate: int, t_ns: int) -> None:
        if self._resampler is None or self._resampler.rate_in != rate:
            self._resampler = StreamResampler(rate, ASR_RATE)
        samples = self._resampler(block)
        if self._echo is not None:
            samples = self._echo.process(samples, t_ns, near_speech=self._seg.in_speech)
            t_ns -= int(self._echo.carry * 1e9 / ASR_RATE)  # the carried samples come out with the next block
        first_pos = self._seg.position + len(self._buf)
        if self._repair is not None and self._echo is not None and len(samples):
            self._repair.add(first_pos, self._echo.last_near, self._echo.last_far)
        self._buf = np.concatenate([self._buf, samples]) if len(self._buf) else samples
        self._clock_pos = self._seg.position + len(self._buf)
        self._clock_ns = t_ns
        if self._echo is not None and self._pauses is not None and len(samples):
            self._pauses.sound(samples, self._echo.last_far, first_pos, self._echo.stats.erle_recent_db, self._at)
        if self._wake is not None and len(samples):
            listen_for_wake(self._wake, samples, self._metrics, self._bus, self._clock_ns)
        if len(samples):
            self.level_dbfs = round(dbfs(samples), 1)  # the microphone's level, for /health and the dashboard
        self._frames()

    def _frames(self) -> None:
        n = self._vad.frame_samples
        while len(self._buf) >= n:
            if self._hold is not None:
                self._hold_on()
            frame, self._buf = self._buf[:n], self._buf[n:]
            prob = self._vad(frame)
            gate = self._gate()
            level, floor = (dbfs(frame), self._raised_floor()) if gate is Gate.raised else (0.0, None)
            start = self._seg.position
            for ev in self._seg.push(frame, prob, level, gate, floor):
                self._handle(ev)
            if self._prefix is not None and self._seg.in_speech:
                self._prefix.frame(prob, self._seg.position, self._seg.audio_between, self._piece_options)
            if self._pauses is not None:
                self._pauses.frame(prob, level, gate, floor, start, self._seg.in_speech, self._at)

    def _gate(self) -> Gate:
        s = self._settings
        if self._speaker is None or self._echo_mode is not EchoMode.half or not self._speaker.audible(s.echo_tail_ms):
            return Gate.open
        return Gate.raised if s.barge_in else Gate.closed

    def _raised_floor(self) -> float:
        """Half duplex: the level speech must reach while the robot talks — the fixed floor, or as loud as
        what the speaker played in the last moments (plus a margin), whichever is higher: its echo is
        quieter than that, a person who means to interrupt is not."""
        s = self._settings
        peak = None if self._far is None else self._far.peak_dbfs(self._clock_ns, FAR_WINDOW_NS)
        return s.barge_in_min_dbfs if peak is None else max(s.barge_in_min_dbfs, peak + s.barge_in_far_margin_db)

    def _at(self, pos: int) -> int:
        """Capture time (monotonic ns) of stream position `pos`, from the latest block's timestamp."""
        return self._clock_ns - int((self._clock_pos - pos) * 1e9 / ASR_RATE)

    def _handle(self, ev: object) -> None:
        now = time.monotonic_ns()
        if isinstance(ev, SpeechStart):
            self._speech_start_ns = now
            self._speech_start_pos = ev.start
            self._utterance = new_turn_id()
            self._decision = ("silence", None, None)
            talking = self._speaker is not None and self._speaker.talking()
            # A fact for the agent (who decides barge-in); the speaker stops by itself only if the say
            # request playing asked for that (direct callers of /v1/say).
            stopped = bool(talking and self._speaker is not None and self._speaker.interrupt_on_speech())
            self._barge_in = talking
            if self._prefix is not None:  # not a barge-in: its overlap is repaired, and it takes the full window
                self._prefix.start(self._utterance, self._seg.audio_start, live=self.realtime and not talking)
            self._bus.publish_threadsafe(SpeechStarted(t_ns=now, turn_id=self._utterance,
                                                       audio_s=round(ev.start / ASR_RATE, 3),
                                                       captured_ns=self._at(ev.start), during_playback=talking,
                                                       barge_in=stopped))
        elif isinstance(ev, Pause):
            # Only where time is real: a file read as fast as possible reaches the end at once anyway.
            if self.realtime and self._settings.asr_speculative:
                self._speculate(ev)
            if self._end_of_turn is not None:
                self._decide_end(ev)
        elif isinstance(ev, Resume):
            self._cancel_speculation()
            self._decision = ("silence", None, None)
            self._bus.publish_threadsafe(SpeechResumed(t_ns=now, turn_id=self._utterance))
        elif isinstance(ev, Dropped):
            self._cancel_speculation()
            self._metrics.utterances.labels("too_short").inc()
            if self._pauses is not None:
                self._pauses.dropped()
            self._bus.publish_threadsafe(SpeechEnded(t_ns=now, audio_s=round(ev.end / ASR_RATE, 3),
                                                     dropped=ev.reason))
        elif isinstance(ev, SpeechEnd):
            self._end_of_speech(ev, now)

    def _decide_end(self, ev: Pause) -> None:
        """At the first pause: is the turn over? Sure: end it now; sure it is not: wait longer."""
        assert self._end_of_turn is not None
        try:
            decision, prob, ms = self._end_of_turn.decide(ev.audio)
        except Exception:  # a failing model must not stop listening: the silence tail decides
            log.exception("end-of-turn model failed; using the silence tail")
            return
        self._decision = (decision, prob, ms)
        log.info("first pause: the end-of-turn model says %s (p=%.3f, %.0f ms)", decision, prob, ms)
        self._metrics.turn_decisions.labels(decision).inc()
        if decision == "complete":
            for end in self._seg.end_now("complete"):
                self._handle(end)
        elif decision == "incomplete":
            self._seg.wait_longer(self._settings.turn_incomplete_wait_ms)
        elif self._settings.turn_unsure_silence_ms:
            self._seg.wait_longer(self._settings.turn_unsure_silence_ms)

    def _speculate(self, ev: Pause) -> None:
        self._cancel_speculation()
        audio, _ = self._repaired(ev.audio, ev.audio_start)
        options = self._utterance_options(len(audio))
        spec = _Speculation(self._settled(ev, lambda: self._asr.submit(audio, options, source="mic")), ev.end)
        self._spec = spec
        utterance, pause_ns, captured = self._utterance, time.monotonic_ns(), self._at(ev.end)

        def done(f: Future[Transcript]) -> None:
            # The agent may start its reply from this (and hold the audio until the final transcript).
            if f.cancelled() or spec.stale or f.exception() is not None or not f.result().text.strip():
                return
            t = f.result()
            eot = self._end_of_turn
            if eot is not None and self._decision[0] != "complete" and eot.trails_off(t.text):
                self._hold = spec.end  # the listener thread makes the segmenter wait (it owns it)
            self._bus.publish_threadsafe(SpeculativeTranscript(
                t_ns=time.monotonic_ns(), turn_id=utterance, text=t.text, language=t.language, pause_ns=pause_ns,
                speech_end_captured_ns=captured, asr_ms=round(t.asr_ms, 1)))

        spec.future.add_done_callback(done)

    def _settled(self, ev: Pause, whole: Callable[[], Future[Transcript]]) -> Future[Transcript]:
        """The transcript at a pause: what `audio.incremental` settled and the rest, or `whole()` (nothing settled;
        with the name check, a settled text without the name)."""
        def rest(text: str, cut: int) -> Future[Transcript] | None:
            if self._settings.asr_fit_name_check and not names_a_hotword(text, self._options.hotwords):
                return None
            piece = self._asr.submit(ev.audio[cut - ev.audio_start:], self._piece_options, source="mic")
            return after_settled(text, (cut - ev.audio_start) / ASR_RATE, piece)
        prefix = self._prefix
        return (prefix.at_pause(self._utterance, ev.audio_start, rest, whole) if prefix else None) or whole()

    def _hold_on(self) -> None:
        """The speculative words stop where a sentence cannot (`turn_model.trails_off`): the utterance waits
        `turn_incomplete_wait_ms`, as when the model says incomplete, if it is still the one they came from."""
        hold, self._hold = self._hold, None
        if self._spec is None or self._spec.end != hold or not self._seg.in_speech:
            return
        self._seg.wait_longer(self._settings.turn_incomplete_wait_ms)
        if self._decision[0] != "incomplete":
            self._metrics.turn_decisions.labels("trailing").inc()
        self._decision = ("incomplete", *self._decision[1:])

    def _repaired(self, audio: F32, audio_start: int) -> tuple[F32, float | None]:
        """The utterance's audio for ASR: a barge-in's overlap with the robot restored (`audio.overlap`), and
        the time that took (ms; None if nothing was repaired)."""
        if self._repair is None or not self._barge_in:
            return audio, None
        onset = self._speech_start_pos
        paused_at = self._pauses.onset_pos if self._pauses is not None else None
        if paused_at is not None and audio_start <= paused_at < onset:
            onset = paused_at  # the sound rule heard it before the VAD did
        return repair_overlap(self._repair, audio, audio_start, onset,
                              lambda outcome: self._metrics.overlap_repairs.labels(outcome).inc())

    def _utterance_options(self, samples: int) -> TranscribeOptions:
        """A barge-in gets the wider beam (`asr_barge_in_beam_size`) and Whisper's full window: its first words
        decide the interruption. Other live turns up to `asr_fit_max_s` get the fitted window (`asr.fitted`)."""
        if self._barge_in:
            return dataclasses.replace(self._options, beam_size=max(self._settings.asr_barge_in_beam_size,
                                                                    self._options.beam_size))
        if self._settings.asr_fit_window and samples <= self._settings.asr_fit_max_s * ASR_RATE:
            return dataclasses.replace(self._options, fit_window=True,
                                       hotword_check=self._settings.asr_fit_name_check)
        return self._options

    def _cancel_speculation(self) -> None:
        if self._spec is not None:
            self._spec.stale = True
            self._spec.future.cancel()
            self._metrics.speculative.labels("discarded").inc()
            self._spec = None

    def _end_of_speech(self, ev: SpeechEnd, t0: int) -> None:
        turn = self._utterance or new_turn_id()
        self._metrics.utterances.labels(ev.reason).inc()
        speech_ms = (ev.end - ev.start) * 1000 / ASR_RATE
        end_captured = self._at(ev.end)
        self._bus.publish_threadsafe(SpeechEnded(
            t_ns=t0, turn_id=turn, audio_s=round(ev.end / ASR_RATE, 3), speech_ms=round(speech_ms, 1),
            reason=ev.reason, captured_ns=end_captured))
        decision, prob, model_ms = self._decision
        if ev.reason != "silence":  # complete (the model ended it), max_length, end_of_input
            decision = ev.reason
        elif decision != "incomplete":  # the silence tail ended it (the model was unsure, or did not run)
            decision = "silence"
        self._bus.publish_threadsafe(TurnEnd(
            t_ns=t0, turn_id=turn, decision=decision, probability=None if prob is None else round(prob, 3),
            silence_ms=round((self._seg.position - ev.end) * 1000 / ASR_RATE, 1),
            model_ms=None if model_ms is None else round(model_ms, 1)))
        spec, self._spec = self._spec, None
        repair_ms: float | None = None
        if spec is not None and spec.end == ev.end and not spec.future.cancelled():
            future, speculative = spec.future, True
            self._metrics.speculative.labels("used").inc()
        else:
            if spec is not None:
                spec.future.cancel()
            audio, repair_ms = self._repaired(ev.audio, ev.audio_start)
            future, speculative = self._asr.submit(audio, self._utterance_options(len(audio)), source="mic"), False
        if self._pauses is not None:
            self._pauses.utterance_ended(turn)  # its transcript decides: no words → resume; words → the agent
        start_s, end_s = ev.start / ASR_RATE, ev.end / ASR_RATE
        silence_ms = (self._seg.position - ev.end) * 1000 / ASR_RATE
        barge_in, speech_start_ns = self._barge_in, self._speech_start_ns

        def done(f: Future[Transcript]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                log.error("transcription of turn %s failed: %s", turn, exc)
                return
            t = f.result()
            now = time.monotonic_ns()
            if self._pauses is not None:
                self._pauses.transcribed(turn, t.text)
            eos_ms = (now - t0) / 1e6
            self._metrics.eos_to_transcript.observe(eos_ms / 1000)
            stages = {"speech": round(speech_ms, 1), "end_silence": round(silence_ms, 1),
                      "asr_queue": round(t.queue_ms, 1), "asr": round(t.asr_ms, 1),
                      "eos_to_transcript": round(eos_ms, 1)}
            if repair_ms is not None:
                stages["overlap_repair"] = round(repair_ms, 1)
            if t.settled_s:  # the audio transcribed while the person spoke (`audio.incremental`)
                stages["asr_settled"] = round(t.settled_s * 1000, 1)
            log.info("turn %s: %r (%.0f ms after end of speech%s)", turn, t.text, eos_ms,
                     ", speculative" if speculative else "")
            self._bus.publish_threadsafe(TranscriptEvent(
                t_ns=now, turn_id=turn, text=t.text, language=t.language,
                language_probability=round(t.language_probability, 3), t0_ns=t0, speech_started_ns=speech_start_ns,
                speech_end_captured_ns=end_captured, audio_start_s=round(start_s, 3), audio_end_s=round(end_s, 3),
                stages_ms=stages, speculative=speculative, rtf=round(t.rtf, 4), asr_window_s=t.window_s,
                barge_in=barge_in))

        future.add_done_callback(done)
