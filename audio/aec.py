"""Echo control on the microphone path: WebRTC's echo canceller (AEC3), or the half-duplex gate.

`aec`: every 10 ms of microphone audio goes through `pywebrtc-audio`'s AEC3 with the speaker's output
as the reference (`audio.farend.FarEnd`), aligned by capture and play times on the monotonic clock —
both devices' timestamps already include their reported latencies, so what is left for AEC3's own
delay estimator is the acoustic path; `aec_delay_ms` adds a hint where a device under-reports. With
the echo removed the VAD listens at its normal threshold while the robot talks, so a person can
interrupt from their first word. `half`: no processing; the listener raises its gates while the robot
talks (the fallback where the library does not load). `off`: neither (a headset).

Echo return loss enhancement (ERLE, dB: microphone energy / output energy) is measured on frames where
the speaker was playing and nobody was speaking near the microphone; the time spent here is measured
per thread (`time.thread_time`), so the CPU cost is a fraction of real time.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from audio.farend import FarEnd
from audio.pcm import ASR_RATE, F32
from audio.settings import EchoMode

log = logging.getLogger(__name__)

FRAME = ASR_RATE // 100  # AEC3 works on 10 ms frames
#: A far-end frame louder than this (RMS dBFS) counts as "the robot is playing" for ERLE.
FAR_ACTIVE_DBFS = -45.0
#: Time constant of the recent ERLE (s).
RECENT_S = 3.0


class EchoError(RuntimeError):
    """The echo canceller cannot be used (library missing or failing)."""


class EchoMetrics(Protocol):
    def aec_observe(self, erle_db: float | None, cpu_s: float, audio_s: float) -> None: ...


@dataclass
class EchoStats:
    mode: str
    requested: str
    error: str | None = None
    delay_hint_ms: int = 0
    noise_suppression: bool = False
    erle_db: float | None = None  # over everything since the start
    erle_recent_db: float | None = None  # the last few seconds of playback
    far_active_s: float = 0.0
    audio_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def cpu_fraction(self) -> float | None:
        return self.cpu_s / self.audio_s if self.audio_s > 0 else None

    def as_dict(self) -> dict[str, object]:
        frac = self.cpu_fraction
        return {"mode": self.mode, "requested": self.requested, "error": self.error,
                "delay_hint_ms": self.delay_hint_ms, "noise_suppression": self.noise_suppression,
                "erle_db": _round(self.erle_db), "erle_recent_db": _round(self.erle_recent_db),
                "far_active_s": round(self.far_active_s, 2), "audio_s": round(self.audio_s, 2),
                "cpu_s": round(self.cpu_s, 3), "cpu_fraction": None if frac is None else round(frac, 5)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _db(num: float, den: float) -> float | None:
    if num <= 0:
        return None
    return 10 * math.log10(num / max(den, 1e-12))


def load_processor(*, noise_suppression: bool, high_pass: bool, delay_ms: int) -> Any:
    """A configured `pywebrtc_audio.AudioProcessor`; raises EchoError with what to install."""
    try:
        import pywebrtc_audio
    except ImportError as e:
        raise EchoError(f"pywebrtc-audio is not installed ({e}): pip install 'pywebrtc-audio>=0.2' "
                        "(or set WATUS_AUDIO_ECHO_MODE=half)") from None
    try:
        return pywebrtc_audio.AudioProcessor(ASR_RATE, 1, echo_cancellation=True,
                                             noise_suppression=noise_suppression, high_pass_filter=high_pass,
                                             stream_delay_ms=delay_ms)
    except Exception as e:  # the native module failed to initialise
        raise EchoError(f"pywebrtc-audio failed to start AEC3: {e}") from None


class EchoCanceller:
    """AEC3 over a stream of 16 kHz blocks of any length (10 ms frames inside, the remainder carried)."""

    def __init__(self, far: FarEnd, *, delay_ms: int = 0, noise_suppression: bool = False, high_pass: bool = True,
                 metrics: EchoMetrics | None = None, requested: str = "aec") -> None:
        self._far = far
        self._ap = load_processor(noise_suppression=noise_suppression, high_pass=high_pass, delay_ms=delay_ms)
        self._metrics = metrics
        self._carry = np.zeros(0, np.float32)
        self._in_e = self._out_e = 0.0  # energies over ERLE frames since the start
        self._rin = self._rout = 0.0  # exponentially decayed, for the recent ERLE
        self._decay = math.exp(-FRAME / ASR_RATE / RECENT_S)
        self._far_min = (10 ** (FAR_ACTIVE_DBFS / 20)) ** 2 * FRAME
        self.stats = EchoStats("aec", requested, delay_hint_ms=delay_ms, noise_suppression=noise_suppression)
        self.last_far = np.zeros(0, np.float32)  # the reference of the last `process` output, sample for sample
        self.last_near = np.zeros(0, np.float32)  # the microphone input of the last `process` output

    @property
    def carry(self) -> int:
        """Samples received but not yet processed (less than one 10 ms frame)."""
        return len(self._carry)

    def reset(self) -> None:
        self._carry = np.zeros(0, np.float32)
        self._ap.reset()

    def process(self, samples: F32, end_ns: int, near_speech: bool = False) -> F32:
        """Echo-cancelled audio for `samples`, whose last sample was captured at `end_ns` (whole frames only)."""
        buf = np.concatenate([self._carry, samples]) if len(self._carry) else np.asarray(samples, np.float32)
        n = len(buf) // FRAME * FRAME
        self._carry = buf[n:].copy()
        if n == 0:
            return np.zeros(0, np.float32)
        t_cpu = time.thread_time()
        first_ns = end_ns - int((len(buf) - 1) * 1e9 / ASR_RATE)  # capture time of buf[0]
        far = self._far.read(first_ns, n)
        self.last_far = far
        self.last_near = buf[:n]
        out = np.empty(n, np.float32)
        for i in range(0, n, FRAME):
            near_f, far_f = buf[i:i + FRAME], far[i:i + FRAME]
            out_f = self._ap.process(np.ascontiguousarray(near_f), np.ascontiguousarray(far_f))
            out[i:i + FRAME] = out_f
            self._measure(near_f, far_f, out_f, near_speech)
        cpu = time.thread_time() - t_cpu
        st = self.stats
        st.cpu_s += cpu
        st.audio_s += n / ASR_RATE
        st.erle_db = _db(self._in_e, self._out_e)
        st.erle_recent_db = _db(self._rin, self._rout)
        if self._metrics is not None:
            self._metrics.aec_observe(st.erle_recent_db, cpu, n / ASR_RATE)
        return out

    def _measure(self, near: F32, far: F32, out: F32, near_speech: bool) -> None:
        self._rin *= self._decay
        self._rout *= self._decay
        if near_speech or float(np.dot(far, far)) < self._far_min:
            return
        e_in, e_out = float(np.dot(near, near)), float(np.dot(out, out))
        self._in_e += e_in
        self._out_e += e_out
        self._rin += e_in
        self._rout += e_out
        self.stats.far_active_s += FRAME / ASR_RATE


def make_echo(mode: EchoMode, far: FarEnd, *, delay_ms: int, noise_suppression: bool, high_pass: bool,
              metrics: EchoMetrics | None = None) -> tuple[EchoCanceller | None, EchoStats]:
    """The canceller for `mode` (None for half/off) and its stats; `aec` falls back to `half` if it cannot load."""
    if mode is not EchoMode.aec:
        return None, EchoStats(mode.value, mode.value)
    try:
        aec = EchoCanceller(far, delay_ms=delay_ms, noise_suppression=noise_suppression, high_pass=high_pass,
                            metrics=metrics)
    except EchoError as e:
        log.warning("echo cancellation unavailable, using the half-duplex gate: %s", e)
        return None, EchoStats(EchoMode.half.value, mode.value, error=str(e))
    log.info("echo cancellation: WebRTC AEC3 (delay hint %d ms, noise suppression %s)", delay_ms,
             noise_suppression)
    return aec, aec.stats
