"""Pausing the robot while someone speaks over it, and resuming when the speech was nothing.

The listener feeds every VAD frame here. A run of speech-like frames (`barge_in_pause_ms`) while the
speaker is audible pauses playback at once; the utterance then decides: none at all (too short) resumes
at once (`not_speech`), a transcript without real words resumes at once (`no_words`), one with words is
the agent's to act on (it stops the reply, or resumes it); whatever nobody decided resumes after
`barge_in_resume_ms` (`timeout`). Speech-like means the VAD's normal threshold on an open gate, or the
half-duplex gate's own level and probability while it is raised.

With echo cancellation there is a faster rule (`sound`): AEC3 leaves -70 to -95 dBFS of the robot's own
voice, so a few 10 ms frames of cancelled audio well above that (and above the residual's recent floor) are
someone else's sound. That pauses 20-50 ms after a person's onset, where the VAD needs one or two whole
32 ms frames and its context (60-150 ms, measured on the duplex bench's phrases); the sooner the robot is
quiet, the less of the person's first words the canceller's double-talk handling damages. A pause by
sound that the VAD does not confirm within `barge_in_confirm_ms` was a knock or a clatter: it resumes
(`not_speech`). The rule is used only while the canceller is known to work (recent ERLE), and not in
the first 60 ms after the robot starts speaking again from silence, where AEC3 lets a little of its first
word through (-45 dBFS for 20-40 ms at a sentence start in the room).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from audio.pcm import ASR_RATE, F32
from audio.segmenter import Gate
from audio.settings import AudioSettings
from watus.core.words import real_words

#: The echo canceller's frame (10 ms at 16 kHz), the unit of the sound rule.
AEC_FRAME = ASR_RATE // 100
#: The speaker's output counts as playing above this power (-60 dBFS RMS).
FAR_ACTIVE_POWER = 1e-6
#: After this many silent 10 ms frames of output, its next `FAR_ONSET_FRAMES` are not trusted: AEC3 lets
#: up to ~40 ms of the robot's first word through at -45 dBFS when it starts after digital silence
#: (measured in the room: one leak per sentence start, never longer).
FAR_QUIET_FRAMES = 3
FAR_ONSET_FRAMES = 6
#: The residual's floor is its quietest frame in this many 100 ms chunks (minimum statistics).
FLOOR_CHUNKS = 15


class ResidualFloor:
    """The quietest 10 ms frame of the last ~1.5 s: noise and leftover echo, never a talker, whose syllables
    have gaps; it follows a fan switched on within the window."""

    def __init__(self) -> None:
        self._chunks: collections.deque[float] = collections.deque(maxlen=FLOOR_CHUNKS)
        self._current = math.inf
        self._frames = 0

    @property
    def level(self) -> float:
        """Over completed chunks only, so a sound that has just begun does not raise its own threshold."""
        return min(self._chunks) if self._chunks else -math.inf

    def add(self, level: float) -> None:
        self._current = min(self._current, level)
        self._frames += 1
        if self._frames % 10 == 0:
            self._chunks.append(self._current)
            self._current = math.inf


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
        self._loud = 0  # consecutive loud frames of echo-cancelled audio
        self._loud_start = 0
        self._floor = ResidualFloor()
        self._far_quiet = FAR_QUIET_FRAMES  # consecutive silent frames of the speaker's output
        self._far_onset_left = 0  # frames still ignored after the speaker started again
        # Stream position by which the VAD must confirm a pause by sound (0: none pending). Positions, not
        # the clock: a listener running late on a busy machine must not resume a pause the VAD confirms.
        self._confirm_by = 0
        #: Stream position of the first loud or speech frame of the last pause (the barge-in's onset).
        self.onset_pos: int | None = None

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
            self._confirm_by = 0
            if self._run == 0:
                self._run_start = frame_start
            self._run += 1
            if self._paused:
                self._resume_at = max(self._resume_at, now + self._hold_ns)
            elif self._run >= self._needed and sp.audible() and sp.pause(captured_at(self._run_start)):
                self._paused, self._deciding, self.onset_pos = True, None, self._run_start
                self._resume_at = now + self._hold_ns
        else:
            self._run = 0
        if self._paused and self._confirm_by and not in_speech and frame_start >= self._confirm_by:
            self.resume("not_speech")
        elif self._paused and self._deciding is None and not in_speech and now >= self._resume_at:
            self.resume("timeout")

    def sound(self, cancelled: F32, far: F32, first_pos: int, erle_db: float | None,
              captured_at: Callable[[int], int]) -> None:
        """Echo-cancelled audio starting at stream position `first_pos` (whole 10 ms frames) and the speaker's
        output it was cancelled against (`far`, the same samples): pause on sound."""
        s, sp = self._s, self._speaker
        if self._needed == 0 or s.barge_in_aec_frames == 0:
            return
        trusted = erle_db is not None and erle_db >= s.barge_in_aec_min_erle_db
        for i in range(0, len(cancelled) - AEC_FRAME + 1, AEC_FRAME):
            f = cancelled[i:i + AEC_FRAME]
            level = 10 * math.log10(float(np.dot(f, f)) / AEC_FRAME + 1e-12)
            loud = level >= max(s.barge_in_aec_dbfs, self._floor.level + s.barge_in_aec_margin_db)
            self._floor.add(level)
            if self._far_onset(far[i:i + AEC_FRAME]):
                loud = False  # AEC3 leaks a little of the first words after the robot was silent
            if not loud:
                self._loud = 0
                continue
            if self._loud == 0:
                self._loud_start = first_pos + i
            self._loud += 1
            if (trusted and not self._paused and self._loud >= s.barge_in_aec_frames and sp.audible()
                    and sp.pause(captured_at(self._loud_start))):
                now = time.monotonic_ns()
                self._paused, self._deciding, self.onset_pos = True, None, self._loud_start
                self._resume_at = now + self._hold_ns
                self._confirm_by = self._loud_start + s.barge_in_confirm_ms * ASR_RATE // 1000

    def _far_onset(self, far: F32) -> bool:
        """Is this frame within `FAR_ONSET_FRAMES` of the speaker starting again after a silence?"""
        active = len(far) > 0 and float(np.dot(far, far)) / len(far) > FAR_ACTIVE_POWER
        if not active:
            self._far_quiet += 1
            return False
        if self._far_quiet >= FAR_QUIET_FRAMES:
            self._far_onset_left = FAR_ONSET_FRAMES
        self._far_quiet = 0
        if self._far_onset_left > 0:
            self._far_onset_left -= 1
            return True
        return False

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
            self._paused, self._deciding, self._confirm_by = False, None, 0
            self._speaker.resume(reason, text)
