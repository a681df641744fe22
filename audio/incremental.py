"""Transcribe a long utterance while the person is still speaking, so only its last piece is left at the pause.

The speculative transcript at the first pause waits on one ASR pass over the whole utterance, and with the
fitted window that pass grows with the utterance: measured here (base, int8, 2 threads, piper) 86 ms for
3 s, 142 ms for 5 s, 219 ms for 10 s. The CPU is mostly idle while the person speaks, so each time the
utterance has gone on for `min_piece_s` past what is settled and the speaker leaves a short gap between
words (at least `gap_frames` VAD frames of silence that did not end the utterance), the audio up to the
middle of that gap is transcribed in the background and becomes settled. At the pause only the audio after
the last settled cut is transcribed, and the transcript is the settled text followed by that piece's.

Measured on five piper sentences of 5-11 s, offline: the last piece took 43-76 ms instead of 119-254 ms for
the whole. The piece is transcribed without the settled text as its prompt: with it the fitted decoder ran
on for 300-700 ms. A cut lies only in a gap, never inside a word. In the live listener (piper, 6-9 s, real
time) the pass at the last pause took 50-74 ms instead of 133-230 ms, and the words were the same but one
in 31 (`asr_settled` in the transcript's stages says how much was settled).

Not for barge-ins (their overlap with the robot is repaired first, and they take the full window) and not
without the fitted window (a full-window pass per piece would cost more CPU than it saves).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from audio.asr.base import TranscribeOptions
from audio.asr.runner import Transcript
from audio.pcm import ASR_RATE, F32

if TYPE_CHECKING:
    from audio.segmenter import SegmenterConfig
    from audio.settings import AudioSettings

log = logging.getLogger(__name__)

Submit = Callable[[F32, TranscribeOptions], "Future[Transcript]"]
#: At the pause: the transcript from the settled text and the stream position it covers up to (None: declined).
Rest = Callable[[str, int], "Future[Transcript] | None"]
Whole = Callable[[], "Future[Transcript]"]


@dataclass
class _Utterance:
    id: str
    audio_start: int  # stream position of the utterance's first sample (its pre-roll)
    settled_end: int  # stream position up to which the text is settled (audio_start: nothing yet)
    texts: list[str] = field(default_factory=list)
    pending: Future[Transcript] | None = None
    pending_end: int = 0
    silence: int = 0  # VAD frames of silence in a row, inside the utterance


def join_texts(*texts: str) -> str:
    """Pieces of one utterance as one transcript (single spaces, empty pieces left out)."""
    return " ".join(" ".join(t.split()) for t in texts if t.strip())


class SettledPrefix:
    """The settled part of the utterance in progress. The listener thread calls `start`, `frame` and
    `at_pause`; ASR results arrive on the ASR thread, so the shared state is guarded by a lock."""

    def __init__(self, submit: Submit, frame_samples: int, *, neg_threshold: float, gap_frames: int = 3,
                 min_piece_s: float = 2.0) -> None:
        self._submit = submit
        self._n = frame_samples
        self._neg = neg_threshold
        self._gap = max(1, gap_frames)
        self._min_piece = int(min_piece_s * ASR_RATE)
        self._lock = threading.RLock()  # cancelling a piece runs its callback, which takes the lock, at once
        self._u: _Utterance | None = None

    @classmethod
    def of(cls, settings: AudioSettings, submit: Submit, seg: SegmenterConfig) -> SettledPrefix | None:
        """The listener's, if the settings ask for it (`asr_incremental` with the fitted window and speculation).
        A frame counts as silence where the segmenter's own hysteresis says so."""
        if not (settings.asr_incremental and settings.asr_fit_window and settings.asr_speculative):
            return None
        return cls(submit, seg.frame_samples, neg_threshold=seg.neg_threshold,
                   min_piece_s=settings.asr_incremental_min_s)

    def start(self, utterance: str, audio_start: int, *, live: bool = True) -> None:
        """A new utterance began (the last one is forgotten, a piece still being transcribed dropped); one
        that is not `live` (a barge-in, a file read faster than real time) gets no pieces."""
        with self._lock:
            self._drop()
            self._u = _Utterance(utterance, audio_start, audio_start) if live else None

    def frame(self, prob: float, end_pos: int, audio: Callable[[int, int], F32], options: TranscribeOptions) -> None:
        """One VAD frame of the utterance, ending at stream position `end_pos`. At the end of a gap of at
        least `gap_frames` silent frames, the audio from the settled end to the gap's middle is transcribed
        if it is at least `min_piece_s` long and nothing else is being transcribed. `audio(a, b)` gives
        the utterance's samples for stream positions [a, b)."""
        with self._lock:
            u = self._u
            if u is None:
                return
            if prob < self._neg:
                u.silence += 1
                return
            gap, u.silence = u.silence, 0
            if gap < self._gap or u.pending is not None:
                return
            speech_from = end_pos - self._n  # this frame is speech again
            cut = speech_from - gap * self._n // 2
            if cut - u.settled_end < self._min_piece:
                return
            piece = audio(u.settled_end, cut)
            if len(piece) == 0:
                return
            u.pending, u.pending_end = self._submit(piece, options), cut
            future, utterance = u.pending, u.id
        future.add_done_callback(lambda f: self._settle(utterance, f))

    def _settle(self, utterance: str, f: Future[Transcript]) -> None:
        with self._lock:
            u = self._u
            if u is None or u.id != utterance or u.pending is not f:
                return
            u.pending = None
            if f.cancelled() or f.exception() is not None:
                return
            u.texts.append(f.result().text)
            u.settled_end = u.pending_end
            log.debug("utterance %s: settled up to %.2f s", u.id, (u.settled_end - u.audio_start) / ASR_RATE)

    def split(self, utterance: str, audio_start: int) -> tuple[str, int] | None:
        """(settled text, stream position it covers up to) for the utterance, if some of it is settled and no
        piece is being transcribed; else None."""
        with self._lock:
            u = self._u
            if u is None or u.id != utterance or u.audio_start != audio_start or u.pending is not None:
                return None
            if u.settled_end <= u.audio_start or not any(t.strip() for t in u.texts):
                return None
            return join_texts(*u.texts), u.settled_end

    def at_pause(self, utterance: str, audio_start: int, rest: Rest, whole: Whole) -> Future[Transcript] | None:
        """The utterance's transcript at a pause: `rest(settled text, cut)` (the transcription of what follows
        the cut, joined to the text: `after_settled`) where some of it is settled, or None to transcribe it
        whole. A piece not yet started is cancelled so it does not hold that up. A piece under way is waited
        for (the ASR has one worker: anything submitted now would wait behind it anyway), then `rest`, or
        `whole()` if nothing could be settled or `rest` declines."""
        with self._lock:
            u = self._u
            if u is None or u.id != utterance or u.audio_start != audio_start:
                return None
            pending = u.pending
            if pending is not None and pending.cancel():
                u.pending = pending = None
        if pending is None:
            split = self.split(utterance, audio_start)
            return None if split is None else rest(*split)
        out: Future[Transcript] = Future()

        def then(_: Future[Transcript]) -> None:  # on the ASR thread, after `_settle` (added first)
            if out.cancelled():
                return
            split = self.split(utterance, audio_start)
            _chain((rest(*split) if split is not None else None) or whole(), out)

        pending.add_done_callback(then)
        return out

    def _drop(self) -> None:
        if self._u is not None and self._u.pending is not None:
            self._u.pending.cancel()
            self._u.pending = None


def _chain(src: Future[Transcript], dst: Future[Transcript],
           transform: Callable[[Transcript], Transcript] = lambda t: t) -> None:
    """`dst` gets `src`'s outcome (its result through `transform`); cancelling `dst` cancels `src`."""
    def done(f: Future[Transcript]) -> None:
        if f.cancelled():
            dst.cancel()
        elif dst.set_running_or_notify_cancel():  # not cancelled meanwhile
            exc = f.exception()
            dst.set_exception(exc) if exc is not None else dst.set_result(transform(f.result()))

    dst.add_done_callback(lambda d: src.cancel() if d.cancelled() else None)
    src.add_done_callback(done)


def after_settled(settled: str, cut_s: float, tail: Future[Transcript]) -> Future[Transcript]:
    """The utterance's transcript from its settled text and the transcription of what followed `cut_s` into
    it: the piece's transcript with the settled text before it, its segments shifted to the utterance's
    time. Cancelling the result cancels the piece's transcription."""
    def joined(t: Transcript) -> Transcript:
        segments = [dataclasses.replace(s, start=s.start + cut_s, end=s.end + cut_s) for s in t.segments]
        return dataclasses.replace(t, text=join_texts(settled, t.text), segments=segments,
                                   duration_s=t.duration_s + cut_s, settled_s=cut_s)

    out: Future[Transcript] = Future()
    _chain(tail, out, joined)
    return out
