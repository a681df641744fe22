"""Pausing the robot while someone speaks over it, and resuming when the speech was nothing.

The listener feeds every VAD frame here. A run of speech-like frames (`barge_in_pause_ms`) while the
speaker is audible pauses playback at once; the utterance then decides: none at all (too short) resumes
at once (`not_speech`), a transcript without real words resumes at once (`no_words`), one with words is
the agent's to act on (it stops the reply, or resumes it); whatever nobody decided resumes after
`barge_in_resume_ms` (`timeout`). Speech-like means the VAD's normal threshold on an open gate, or the
half-duplex gate's own level and probability while it is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from audio.pcm import ASR_RATE
from audio.segmenter import Gate
from audio.settings import AudioSettings
from watus.core.words import real_words


class PausableSpeaker(Protocol):
    def audible(self, tail_ms: float = 0.0) -> bool: ...

    @property
    def paused(self) -> bool: ...

    def pause(self, onset_ns: int) -> bool: ...

    def resume(self, reason: str, text: str | None = None) -> bool: ...


class PauseWatch:
    def __init__(self, settings: AudioSettings, speaker: PausableSpeaker, frame_samples: int) -> None:
        self._s = settings
        self._speaker = speaker
        frame_ms = frame_samples * 1000 / ASR_RATE
        self._needed = 0 if settings.barge_in_pause_ms <= 0 or not settings.barge_in else \
            max(1, round(settings.barge_in_pause_ms / frame_ms))
        self._hold_ns = settings.barge_in_resume_ms * 1_000_000
        self._run = 0
        self._run_start = 0
        self._paused = False  # this watch paused the speaker (not someone else)
        self._resume_at = 0  # monotonic ns: resume a pause that nothing decided by then
        self._deciding: str | None = None  # the utterance whose transcript decides the pause

    def frame(self, prob: float, level: float, gate: Gate, floor: float | None, frame_start: int,
              in_speech: bool, captured_at: Callable[[int], int]) -> None:
        """One VAD frame starting at stream position `frame_start`; `captured_at` maps positions to time."""
        if self._needed == 0:
            return
        s, sp = self._s, self._speaker
        if gate is Gate.raised:
            speechy = prob >= s.barge_in_threshold and level >= (s.barge_in_min_dbfs if floor is None else floor)
        else:
            speechy = gate is Gate.open and prob >= s.vad_threshold
        now = time.monotonic_ns()
        if self._paused and not sp.paused:
            self._paused = False  # stopped (barge-in) or resumed by request
        if speechy:
            if self._run == 0:
                self._run_start = frame_start
            self._run += 1
            if self._paused:
                self._resume_at = max(self._resume_at, now + self._hold_ns)
            elif self._run >= self._needed and sp.audible() and sp.pause(captured_at(self._run_start)):
                self._paused, self._deciding = True, None
                self._resume_at = now + self._hold_ns
        else:
            self._run = 0
        if self._paused and self._deciding is None and not in_speech and now >= self._resume_at:
            self.resume("timeout")

    def dropped(self) -> None:
        """The speech was too short to be an utterance."""
        self.resume("not_speech")

    def utterance_ended(self, turn: str) -> None:
        """An utterance ended while the robot was paused: its transcript decides."""
        if self._paused:
            self._deciding = turn

    def transcribed(self, turn: str, text: str) -> None:
        """The transcript of `turn` (any thread): no words resume now; words wait for the agent a while."""
        if self._deciding != turn:
            return
        if real_words(text):
            self._deciding = None
            self._resume_at = time.monotonic_ns() + self._hold_ns
        else:
            self.resume("no_words", text)

    def resume(self, reason: str, text: str | None = None) -> None:
        if self._paused:
            self._paused, self._deciding = False, None
            self._speaker.resume(reason, text)
