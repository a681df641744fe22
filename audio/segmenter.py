"""Utterance segmentation: per-frame speech probabilities → speech start, pause, end (pure logic).

Kept free of threads, devices and models so it can be tested on synthetic probabilities. The rules:
speech starts after `min_speech_ms` of consecutive speech frames (with `pre_speech_ms` of audio kept
from before); inside an utterance a frame counts as speech while its probability stays above a lower
threshold (hysteresis, as Silero's own segmenter does); `end_silence_ms` of silence ends it (the
turn's t0); a pause of `pause_ms` first emits `Pause` so a speculative transcription can start;
utterances are cut at `max_utterance_ms`; those with less than `min_utterance_ms` of speech are dropped.
An end-of-turn model may decide earlier (`end_now`) or ask to wait longer (`wait_longer`) for this
utterance; the next one starts again from `end_silence_ms`.

A short burst of speech that did not reach `min_speech_ms` (a first word like "Stop," before a comma)
is remembered: if speech starts within `merge_gap_ms` after it, the utterance's pre-roll reaches back to
it, so the first word is transcribed too (up to `max_pre_speech_ms`).

While the robot talks the gate can be raised (a higher probability and a minimum level are needed to
start) or closed (nothing starts): that is the half-duplex echo guard.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from audio.pcm import ASR_RATE, F32

if TYPE_CHECKING:
    from audio.settings import AudioSettings


class Gate(enum.Enum):
    open = "open"
    raised = "raised"
    closed = "closed"


@dataclass(frozen=True)
class SegmenterConfig:
    sample_rate: int
    frame_samples: int
    threshold: float = 0.5
    min_speech_ms: int = 200
    end_silence_ms: int = 500
    pre_speech_ms: int = 300
    #: A short speech burst this close before a start belongs to the utterance (its first word).
    merge_gap_ms: int = 700
    #: Longest pre-roll when reaching back to such a burst.
    max_pre_speech_ms: int = 1500
    min_utterance_ms: int = 300
    max_utterance_ms: int = 30_000
    #: Silence that emits `Pause` (speculative transcription); None: never.
    pause_ms: int | None = 200
    raised_threshold: float = 0.8
    raised_min_dbfs: float = -30.0
    raised_min_speech_ms: int = 200
    #: Silence kept after the last speech frame in the audio handed to ASR.
    tail_ms: int = 200

    def frames(self, ms: float) -> int:
        return max(1, round(ms * self.sample_rate / 1000 / self.frame_samples)) if ms > 0 else 0

    @property
    def neg_threshold(self) -> float:
        return max(0.01, self.threshold - 0.15)


@dataclass(frozen=True)
class SpeechStart:
    start: int  # sample position of the first speech frame
    gated: bool  # started while the gate was raised (a barge-in)


@dataclass(frozen=True)
class Pause:
    audio: F32  # the utterance so far, ending `tail_ms` after the last speech frame
    end: int  # sample position just after the last speech frame
    audio_start: int = 0  # sample position of `audio[0]`


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class SpeechEnd:
    audio: F32  # pre-roll + speech + `tail_ms` of what followed
    start: int
    end: int  # just after the last speech frame
    reason: str  # "silence", "max_length", "end_of_input"
    audio_start: int = 0  # sample position of `audio[0]` (the pre-roll's first sample)


@dataclass(frozen=True)
class Dropped:
    start: int
    end: int
    reason: str


SegEvent = SpeechStart | Pause | Resume | SpeechEnd | Dropped


class Segmenter:
    def __init__(self, cfg: SegmenterConfig) -> None:
        self.cfg = cfg
        self._pre: deque[F32] = deque(maxlen=max(1, cfg.frames(max(cfg.pre_speech_ms, cfg.max_pre_speech_ms))))
        self._burst: tuple[int, int] | None = None  # (start, end) of the last speech run too short to start
        self._pos = 0  # samples seen
        self._run: list[F32] = []  # consecutive speech frames while idle
        self._frames: list[F32] = []  # the utterance while in speech
        self._in_speech = False
        self._start = 0
        self._audio_start = 0
        self._last_speech_end = 0
        self._last_speech_idx = 0  # frames in `_frames` up to the last speech frame
        self._silence = 0
        self._paused = False
        self._tail = cfg.frames(cfg.tail_ms)
        self._gap = cfg.merge_gap_ms * cfg.sample_rate // 1000
        self._end_frames = cfg.frames(cfg.end_silence_ms)

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def position(self) -> int:
        return self._pos

    @property
    def audio_start(self) -> int:
        """Stream position of the first sample (its pre-roll) of the utterance in progress, or the last one."""
        return self._audio_start

    def audio_between(self, a: int, b: int) -> F32:
        """The samples of the utterance in progress for stream positions [a, b), clipped to it."""
        lo, hi = max(0, a - self._audio_start), b - self._audio_start
        if not self._in_speech or hi <= lo:
            return np.zeros(0, np.float32)
        first, last = lo // self.cfg.frame_samples, -(-hi // self.cfg.frame_samples)
        part = self._frames[first:last]
        if not part:
            return np.zeros(0, np.float32)
        audio = np.concatenate(part)
        return audio[lo - first * self.cfg.frame_samples:hi - first * self.cfg.frame_samples]

    def push(self, frame: F32, prob: float, level_dbfs: float = 0.0, gate: Gate = Gate.open,
             raised_min_dbfs: float | None = None) -> list[SegEvent]:
        """One frame; `raised_min_dbfs` overrides the raised gate's level (e.g. relative to the far end)."""
        cfg = self.cfg
        n = len(frame)
        self._pos += n
        if not self._in_speech:
            return self._idle(frame, prob, level_dbfs, gate, raised_min_dbfs)
        self._frames.append(frame)
        events: list[SegEvent] = []
        if prob >= cfg.neg_threshold:
            if self._paused:
                events.append(Resume())
                self._end_frames = cfg.frames(cfg.end_silence_ms)  # a wait asked at that pause is over
            self._silence, self._paused = 0, False
            self._last_speech_end = self._pos
            self._last_speech_idx = len(self._frames)
        else:
            self._silence += 1
            if cfg.pause_ms is not None and not self._paused and self._silence >= cfg.frames(cfg.pause_ms):
                self._paused = True
                events.append(Pause(self._audio(), self._last_speech_end, self._audio_start))
        length_ms = (self._pos - self._start) * 1000 / cfg.sample_rate
        if self._silence >= self._end_frames:
            events.append(self._finish("silence"))
        elif length_ms >= cfg.max_utterance_ms:
            events.append(self._finish("max_length"))
        return events

    def end_now(self, reason: str) -> list[SegEvent]:
        """End the utterance in progress at once (the end-of-turn model is sure it is complete)."""
        return [self._finish(reason)] if self._in_speech else []

    def wait_longer(self, silence_ms: int) -> None:
        """This utterance ends only after `silence_ms` of silence (the person is likely to go on)."""
        self._end_frames = max(self._end_frames, self.cfg.frames(silence_ms))

    @property
    def silence_ms(self) -> float:
        """Silence since the last speech frame of the utterance in progress."""
        return (self._pos - self._last_speech_end) * 1000 / self.cfg.sample_rate if self._in_speech else 0.0

    def flush(self) -> list[SegEvent]:
        """End of input: close an utterance in progress."""
        return [self._finish("end_of_input")] if self._in_speech else []

    def reset(self) -> None:
        """Forget everything (the stream restarted)."""
        self.__init__(self.cfg)  # type: ignore[misc]

    def _idle(self, frame: F32, prob: float, level_dbfs: float, gate: Gate,
              raised_min_dbfs: float | None = None) -> list[SegEvent]:
        cfg = self.cfg
        if gate is Gate.closed:
            speech, needed = False, 0
        elif gate is Gate.raised:
            floor = cfg.raised_min_dbfs if raised_min_dbfs is None else raised_min_dbfs
            speech = prob >= cfg.raised_threshold and level_dbfs >= floor
            needed = cfg.frames(cfg.raised_min_speech_ms)
        else:
            speech, needed = prob >= cfg.threshold, cfg.frames(cfg.min_speech_ms)
        if not speech:
            if self._run:
                run_start = self._pos - len(frame) - sum(len(f) for f in self._run)
                keep = self._burst is not None and run_start - self._burst[1] <= self._gap
                self._burst = (self._burst[0] if keep and self._burst else run_start, self._pos - len(frame))
            for f in self._run:
                self._pre.append(f)
            self._run = []
            self._pre.append(frame)
            return []
        self._run.append(frame)
        if len(self._run) < max(1, needed):
            return []
        start = self._pos - sum(len(f) for f in self._run)
        pre = cfg.frames(cfg.pre_speech_ms)
        if self._burst is not None and start - self._burst[1] <= self._gap:
            # Reach back to the short burst just before: the utterance's first word.
            pre = max(pre, -(-(start - self._burst[0]) // cfg.frame_samples) + cfg.frames(100))
        self._burst = None
        frames = list(self._pre)[-pre:] if pre else []
        self._frames = [*frames, *self._run]
        self._audio_start = self._pos - sum(len(f) for f in self._frames)
        self._pre.clear()
        self._run = []
        self._in_speech = True
        self._start = start
        self._last_speech_end = self._pos
        self._last_speech_idx = len(self._frames)
        self._silence, self._paused = 0, False
        return [SpeechStart(start, gate is Gate.raised)]

    def _audio(self) -> F32:
        upto = min(len(self._frames), self._last_speech_idx + self._tail)
        return np.concatenate(self._frames[:upto]) if upto else np.zeros(0, np.float32)

    def _finish(self, reason: str) -> SegEvent:
        cfg = self.cfg
        audio, start, end, audio_start = self._audio(), self._start, self._last_speech_end, self._audio_start
        self._in_speech = False
        self._frames = []
        self._silence, self._paused = 0, False
        self._end_frames = cfg.frames(cfg.end_silence_ms)
        speech_ms = (end - start) * 1000 / cfg.sample_rate
        if speech_ms < cfg.min_utterance_ms:
            return Dropped(start, end, "too_short")
        return SpeechEnd(audio, start, end, reason, audio_start)


def segmenter_config(settings: AudioSettings, frame_samples: int, speculative: bool) -> SegmenterConfig:
    """The live listener's segmenter, from the audio settings (`pause_ms` only where it speculates)."""
    return SegmenterConfig(
        sample_rate=ASR_RATE, frame_samples=frame_samples, threshold=settings.vad_threshold,
        min_speech_ms=settings.vad_min_speech_ms, end_silence_ms=settings.vad_end_silence_ms,
        pre_speech_ms=settings.vad_pre_speech_ms, min_utterance_ms=settings.vad_min_utterance_ms,
        max_utterance_ms=int(settings.vad_max_utterance_s * 1000),
        pause_ms=settings.asr_speculative_silence_ms if speculative else None,
        raised_threshold=settings.barge_in_threshold, raised_min_dbfs=settings.barge_in_min_dbfs,
        raised_min_speech_ms=settings.barge_in_min_speech_ms,
        tail_ms=settings.asr_speculative_silence_ms,
    )
