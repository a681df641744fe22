"""What the e2e benchmark learns from the audio service's events about each utterance it heard.

The agent's turn log says what each turn did; only the audio events say where in the microphone stream
an utterance lay (`audio_start_s`: which spoken question it belongs to, so a question heard as two turns
shows), how its end was decided (`turn_end`: complete / incomplete / silence, the model's probability),
whether speech resumed after a pause, and when the speculative transcript a preemptive reply starts
from was ready. `UtteranceLog` keeps those facts by utterance id (the turn id of its record), fed from
the playback cutter's subscription, so the benchmark holds one event stream per audio service.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

from watus.core.wire.audio import (
    AudioEvent,
    SpeculativeTranscript,
    SpeechResumed,
    SpeechStarted,
    Transcript,
    TurnEnd,
)


@dataclass
class Utterance:
    """One utterance as the audio service reported it (stream positions in s, times in monotonic ns)."""

    turn_id: str
    started_s: float | None = None  # position of its speech start in the microphone stream
    started_captured_ns: int | None = None  # capture time of that first speech frame
    during_playback: bool = False  # it started while the robot was talking
    #: (when ready, text) of each speculative transcript, in order: one per pause it made.
    speculative: list[tuple[int, str]] = field(default_factory=list)
    resumed: int = 0  # times speech went on after a pause
    turn_end: dict[str, Any] | None = None  # decision, probability, silence_ms, model_ms
    transcript: str | None = None  # the final transcript
    transcript_ns: int | None = None
    audio_start_s: float | None = None
    audio_end_s: float | None = None

    @property
    def start_s(self) -> float | None:
        """Where the utterance begins in the microphone stream (s), from whichever event said so."""
        return self.audio_start_s if self.audio_start_s is not None else self.started_s


class UtteranceLog:
    """Utterances by id from the typed audio events (thread-safe: fed by the cutter's listener thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Utterance] = {}
        #: Monotonic ns of position 0 of the microphone stream (from the first speech start), or None.
        self.stream_start_ns: int | None = None

    def _get(self, turn_id: str) -> Utterance:
        u = self._by_id.get(turn_id)
        if u is None:
            u = self._by_id[turn_id] = Utterance(turn_id)
        return u

    def on_event(self, ev: AudioEvent) -> None:
        """Note what one event says about its utterance; events of no utterance are ignored."""
        with self._lock:
            if isinstance(ev, SpeechStarted):
                if self.stream_start_ns is None:
                    self.stream_start_ns = ev.captured_ns - round(ev.audio_s * 1e9)
                if ev.turn_id is not None:
                    u = self._get(ev.turn_id)
                    u.started_s, u.started_captured_ns = ev.audio_s, ev.captured_ns
                    u.during_playback = ev.during_playback or ev.barge_in
            elif isinstance(ev, SpeculativeTranscript):
                self._get(ev.turn_id).speculative.append((ev.t_ns, ev.text))
            elif isinstance(ev, SpeechResumed):
                self._get(ev.turn_id).resumed += 1
            elif isinstance(ev, TurnEnd):
                self._get(ev.turn_id).turn_end = {"decision": ev.decision, "probability": ev.probability,
                                                  "silence_ms": ev.silence_ms, "model_ms": ev.model_ms}
            elif isinstance(ev, Transcript):
                u = self._get(ev.turn_id)
                u.transcript, u.transcript_ns = ev.text, ev.t_ns
                u.audio_start_s, u.audio_end_s = ev.audio_start_s, ev.audio_end_s

    def snapshot(self) -> dict[str, Utterance]:
        """A copy of every utterance so far, by id."""
        with self._lock:
            return copy.deepcopy(self._by_id)
