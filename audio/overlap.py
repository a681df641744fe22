"""Words spoken over the robot, restored for ASR: a linear echo estimate where AEC3 muted the person.

AEC3's suppressor mutes the near end while it is unsure whether a sound is echo: measured in the room
with a person 10 dB quieter than the echo, the first 80 ms of "Wait a moment" came out of the
canceller at -90 dBFS (the person was at -42..-31 dBFS there), and whisper heard "Winter moment". The
robot pauses within that time (the sound rule), so only the overlap is damaged, but it holds the first
word. This module keeps the canceller's input (microphone and far end, sample for sample) for a few
seconds, and for an utterance begun over the robot replaces the overlap — from a little before its
onset to the echo's tail after the robot went quiet — with the microphone minus a linear estimate of
the echo: the room's impulse response fitted by least squares (Wiener-Hopf, solved by Levinson's
recursion, then refined to the exact least-squares fit) on the seconds before the onset, when only the
robot spoke. A linear canceller leaves some echo (about 35 dB down here) but never mutes the person.
Offline on the recorded room data: "Winter moment, I have a question." became "Wait a moment, I have a
question.", and with the refinement a person 10 dB below the echo saying "Stop, please stop now." was
heard right in 12 of 12 barge-ins instead of 2 ("On top, please stop now.").

Only where it is safe: the fit needs enough robot speech before the onset and must itself cancel the
echo by `min_fit_erle_db`, otherwise the canceller's output is kept (a non-linear speaker, a moving
microphone). The fit costs ~100 ms of the listener thread once per barge-in utterance (2048 taps, two
refinements).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from audio.pcm import ASR_RATE, F32

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
#: A far-end sample window (10 ms) above this mean power is "the robot is playing" (-45 dBFS).
FAR_ACTIVE_POWER = 10 ** (-45 / 10)
FRAME = ASR_RATE // 100
#: Cross-fade between the canceller's output and the repaired audio (samples).
FADE = ASR_RATE // 200


@dataclass(frozen=True)
class Repair:
    """What was repaired: stream positions, and how well the linear fit cancels the echo."""

    start: int
    end: int
    fit_erle_db: float


def levinson(r: F64, b: F64) -> F64:
    """Solve the symmetric Toeplitz system T(r) x = b (first column `r`) in O(n²)."""
    f = np.array([1.0 / r[0]])
    x = np.array([b[0] / r[0]])
    for k in range(1, len(r)):
        back = r[k:0:-1]
        ef = float(np.dot(back, f))
        fn = (np.append(f, 0.0) - ef * np.insert(f[::-1], 0, 0.0)) / (1.0 - ef * ef)
        x = np.append(x, 0.0) + (b[k] - float(np.dot(back, x))) * fn[::-1]
        f = fn
    return x


def fit_echo_path(far: F64, near: F64, taps: int, regularise: float = 1e-3, *, history: F64 | None = None,
                  refinements: int = 0) -> F64:
    """The impulse response h (len `taps`) minimising |near − far ⊛ h|²: the Wiener-Hopf equations.

    Levinson solves them with the far end's autocorrelation, which treats the far end as zero outside the
    window. On a second of speech that edge error limits the fit to ~18 dB of echo reduction out of sample
    (the room's path itself allows 40). Each of `refinements` steps corrects it: the exact residual (with
    `history`, the `taps` − 1 far-end samples before `far`; zeros if None) gives the exact gradient, and
    the Toeplitz system, as the approximate Hessian, gives the step. Measured on the room's barge-ins with
    a second of the robot before the onset: 18 → 27 → 33 dB out of sample for 0, 1, 2 steps (~30 ms each).
    """
    n = 1 << math.ceil(math.log2(2 * len(far)))
    fx, fy = np.fft.rfft(far, n), np.fft.rfft(near, n)
    r = np.fft.irfft(fx * np.conj(fx), n)[:taps].copy()
    p = np.fft.irfft(fy * np.conj(fx), n)[:taps]
    r[0] *= 1.0 + regularise  # diagonal loading: speech is not white, some directions are barely excited
    h = levinson(r, p)
    if refinements <= 0:
        return h
    before = np.zeros(taps - 1) if history is None else np.asarray(history, np.float64)[-(taps - 1):]
    far_h = np.concatenate([np.zeros(taps - 1 - len(before)), before, far])
    m = 1 << math.ceil(math.log2(len(far_h) + len(near)))
    f_spec = np.fft.rfft(far_h, m)
    err = near - np.convolve(far_h, h, mode="valid")
    for _ in range(refinements):
        # g[k] = Σ e[t] far[t − k]: the correlation of the residual with the far end's history.
        g = np.fft.irfft(f_spec * np.conj(np.fft.rfft(err, m)), m)[:taps][::-1]
        step = h + levinson(r, g)
        new_err = near - np.convolve(far_h, step, mode="valid")
        if float(np.dot(new_err, new_err)) >= float(np.dot(err, err)):
            break  # no better: keep what we have
        h, err = step, new_err
    return h


def _db(x: F64) -> float:
    return 10 * math.log10(float(np.dot(x, x)) / max(len(x), 1) + 1e-12)


class OverlapRepair:
    """The canceller's recent input and the repair of one utterance's overlap with the robot's speech."""

    def __init__(self, *, keep_s: float = 4.0, taps: int = 2048, fit_s: float = 3.0, min_fit_s: float = 0.5,
                 lead_ms: int = 200, tail_ms: int = 150, min_fit_erle_db: float = 12.0, refinements: int = 2) -> None:
        self._cap = int(keep_s * ASR_RATE)
        self._near = np.zeros(self._cap, np.float64)
        self._far = np.zeros(self._cap, np.float64)
        self._end = 0  # stream position just after the last sample kept
        self._start = 0  # stream position of the first sample since the last restart
        self.taps, self._fit, self._min_fit = taps, int(fit_s * ASR_RATE), int(min_fit_s * ASR_RATE)
        self._lead, self._tail = lead_ms * ASR_RATE // 1000, tail_ms * ASR_RATE // 1000
        self._min_erle = min_fit_erle_db
        self._refinements = refinements
        self._cache: tuple[int, F64 | None, float] | None = None  # (fit end, h, fit ERLE) of the last fit

    def add(self, first_pos: int, near: F32, far: F32) -> None:
        """The canceller's input from stream position `first_pos` (contiguous with the last, or a restart)."""
        n = min(len(near), len(far))
        if n == 0:
            return
        if first_pos != self._end:  # the stream restarted: what is kept no longer lines up
            self._near[:] = 0.0
            self._far[:] = 0.0
            self._cache = None
            self._start = first_pos
        i = np.arange(first_pos, first_pos + n)[-self._cap:] % self._cap  # a ring: no copying of what is kept
        self._near[i] = near[:n][-self._cap:]
        self._far[i] = far[:n][-self._cap:]
        self._end = first_pos + n

    def _slice(self, a: int, b: int) -> tuple[F64, F64]:
        """Near and far for stream positions [a, b) (clipped to what is kept)."""
        a, b = max(a, self._end - self._cap, self._start), min(b, self._end)
        i = np.arange(a, max(a, b)) % self._cap
        return self._near[i], self._far[i]

    def _active_frames(self, far: F64) -> npt.NDArray[np.bool_]:
        m = len(far) // FRAME
        return np.asarray((far[:m * FRAME].reshape(m, FRAME) ** 2).mean(axis=1) > FAR_ACTIVE_POWER)

    def _path(self, fit_end: int) -> tuple[F64 | None, float]:
        """The echo path fitted on the robot-only audio before `fit_end` (cached per utterance)."""
        if self._cache is not None and self._cache[0] == fit_end:
            return self._cache[1], self._cache[2]
        near, far = self._slice(fit_end - self._fit, fit_end)
        h: F64 | None = None
        erle = 0.0
        if len(far) > self.taps and int(self._active_frames(far).sum()) * FRAME >= self._min_fit:
            start = fit_end - len(far)
            _, history = self._slice(start - self.taps + 1, start)
            h = fit_echo_path(far, near, self.taps, history=history, refinements=self._refinements)
            resid = near - np.convolve(far, h)[:len(far)]
            erle = _db(near[self.taps:]) - _db(resid[self.taps:])
            if erle < self._min_erle:
                h = None
        self._cache = (fit_end, h, erle)
        return h, erle

    def repair(self, audio: F32, audio_start: int, onset: int) -> tuple[F32, Repair | None]:
        """`audio` (the canceller's output from stream position `audio_start`) with its overlap with the
        robot's speech — from `lead_ms` before `onset` to `tail_ms` after the robot went quiet — replaced
        by the linear residual; unchanged (None) when there was no overlap or the fit is not good enough."""
        audio_end = audio_start + len(audio)
        w0 = max(audio_start, onset - self._lead, max(self._end - self._cap, self._start) + self.taps)
        _, far_w = self._slice(w0, audio_end)
        active = np.flatnonzero(self._active_frames(far_w))
        if len(active) == 0:
            return audio, None
        w1 = min(audio_end, self._end, w0 + (int(active[-1]) + 1) * FRAME + self._tail)
        h, erle = self._path(w0)
        if h is None or w1 - w0 < FRAME:
            log.debug("overlap not repaired (fit ERLE %.1f dB)", erle)
            return audio, None
        near, far = self._slice(w0 - self.taps + 1, w1)
        resid = (near - np.convolve(far, h)[:len(far)])[self.taps - 1:].astype(np.float32)
        out = audio.copy()
        a, b = w0 - audio_start, w1 - audio_start
        ramp = np.linspace(0.0, 1.0, FADE, dtype=np.float32)
        seg = resid[:b - a].copy()
        if a > 0:
            seg[:FADE] = seg[:FADE] * ramp[:len(seg[:FADE])] + out[a:a + FADE] * (1 - ramp[:len(seg[:FADE])])
        if b < len(out):
            k = min(FADE, len(seg))
            seg[-k:] = seg[-k:] * ramp[::-1][-k:] + out[b - k:b] * ramp[-k:]
        out[a:b] = seg
        return out, Repair(w0, w1, round(erle, 1))


def repair_overlap(repair: OverlapRepair, audio: F32, audio_start: int, onset: int,
                   count: Callable[[str], None]) -> tuple[F32, float | None]:
    """`repair.repair`, timed and counted (`count("repaired" | "kept")`): the audio for ASR and the ms it took
    (None if nothing was repaired). A failure keeps the canceller's output: never lose the utterance over this."""
    t = time.perf_counter()
    try:
        repaired, done = repair.repair(audio, audio_start, onset)
    except Exception:
        log.exception("overlap repair failed; transcribing the cancelled audio")
        return audio, None
    count("repaired" if done else "kept")
    if done is None:
        return audio, None
    ms = (time.perf_counter() - t) * 1000
    log.info("barge-in overlap repaired: %.0f ms of audio (linear fit %.1f dB, %.0f ms)",
             (done.end - done.start) * 1000 / ASR_RATE, done.fit_erle_db, ms)
    return repaired, ms
