"""A virtual acoustic room as the microphone: people's WAVs, the robot's own echo, and noise.

So that echo cancellation, barge-in and addressing run and are tested without hardware, the `room`
microphone hears what a real one on the robot would: each person's WAV placed at its offset, plus what
the speaker actually played (`audio.farend.FarEnd`, the same signal the echo canceller gets as its
reference) passed through an echo path — a delay, a gain and an exponentially decaying reverberant tail
(seeded, so a room is reproducible), or an impulse-response WAV — plus optional white noise. Blocks
come in real time, stamped with their capture time on the monotonic clock.

Offsets count from the room's clock start (`start_clock`), which the audio app calls when its
`/health` first answers 200: "speech at 2 s" means two seconds after the service was ready.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audio.devices.base import BlockCallback, DeviceError, EndCallback
from audio.devices.wavfile import read_mono
from audio.farend import FarEnd
from audio.pcm import ASR_RATE, F32

log = logging.getLogger(__name__)

#: Onset of a clip: its first 10 ms frame above this level (RMS dBFS).
ONSET_DBFS = -40.0


def synthetic_rir(delay_ms: float, gain_db: float, decay_ms: float, seed: int = 7, rate: int = ASR_RATE) -> F32:
    """An echo path: a direct sound after `delay_ms`, then a decaying noise tail (RT60 `decay_ms`).

    Scaled so the echo's energy is `gain_db` relative to what was played (−6 dB: half the amplitude).
    """
    d = round(delay_ms * rate / 1000)
    length = max(1, int(decay_ms * rate / 1000))
    rng = np.random.default_rng(seed)
    tail = rng.standard_normal(length) * np.exp(-6.9 * np.arange(length) / length)  # −60 dB at its end
    rir = np.zeros(d + length, np.float64)
    rir[d] = 1.0
    rir[d + 1:] += 0.3 * tail[1:]
    rir *= 10 ** (gain_db / 20) / np.sqrt(np.sum(rir ** 2))
    return rir.astype(np.float32)


def onset_s(clip: F32, rate: int = ASR_RATE) -> float:
    """Seconds from the clip's start to its first audible 10 ms (0 if it is silent throughout)."""
    n = rate // 100
    frames = len(clip) // n
    if frames == 0:
        return 0.0
    rms = np.sqrt(np.mean(clip[:frames * n].reshape(frames, n) ** 2, axis=1))
    loud = np.nonzero(rms > 10 ** (ONSET_DBFS / 20))[0]
    return float(loud[0] * n / rate) if len(loud) else 0.0


@dataclass(frozen=True)
class Talker:
    path: Path
    at_s: float
    clip: F32
    onset_s: float  # first audible sound, from the clip's start


class RoomMic:
    """The `room` microphone backend (`WATUS_AUDIO_MIC_BACKEND=room`)."""

    realtime = True

    def __init__(self, far: FarEnd, speech: list[Path], at_s: list[float], *, echo_delay_ms: float = 40.0,
                 echo_gain_db: float = -6.0, echo_decay_ms: float = 120.0, echo_rir: Path | None = None,
                 noise_db: float | None = None, speech_gain_db: float = 0.0, block_ms: int = 32) -> None:
        if len(at_s) not in (0, len(speech)):
            raise DeviceError(f"room: {len(speech)} speech file(s) but {len(at_s)} offset(s) "
                              "(WATUS_AUDIO_ROOM_SPEECH_AT_S needs one per file)")
        self._far = far
        self._paths = speech
        self._at = at_s or [1.0 + 5.0 * i for i in range(len(speech))]
        self._rir_path = echo_rir
        self._echo = (echo_delay_ms, echo_gain_db, echo_decay_ms)
        self._noise = None if noise_db is None else 10 ** (noise_db / 20)
        self._speech_gain = 10 ** (speech_gain_db / 20)
        self.sample_rate = ASR_RATE
        self.block = max(1, ASR_RATE * block_ms // 1000)
        self.name = f"room:{len(speech)} talker(s), echo {echo_gain_db:+.0f} dB"
        self.talkers: list[Talker] = []
        self._rir = np.zeros(1, np.float32)
        self._t0_ns: int | None = None
        self._clock = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the room's clock: talkers' offsets count from here --------------------------------------------

    def start_clock(self, t_ns: int | None = None) -> None:
        if self._t0_ns is None:
            self._t0_ns = t_ns if t_ns is not None else time.monotonic_ns()
            self._clock.set()
            log.info("room: clock started, %d talker(s) at %s s", len(self.talkers), self._at)

    def schedule(self) -> dict[str, object]:
        """What the room plays and when: each talker's start and onset on the monotonic clock (for /health)."""
        t0 = self._t0_ns
        rows = []
        for t in self.talkers:
            start = None if t0 is None else t0 + int(t.at_s * 1e9)
            rows.append({"path": str(t.path), "at_s": t.at_s, "duration_s": round(len(t.clip) / ASR_RATE, 3),
                         "start_ns": start, "onset_ns": None if start is None else start + int(t.onset_s * 1e9)})
        return {"clock_ns": t0, "echo_taps": len(self._rir), "talkers": rows}

    # --- AudioSource ---------------------------------------------------------------------------------

    def start(self, on_block: BlockCallback, on_end: EndCallback) -> None:
        if self._rir_path is not None:
            rir = read_mono(self._rir_path, ASR_RATE)
            if not len(rir):
                raise DeviceError(f"room: impulse response {self._rir_path} is empty")
            self._rir = rir
        else:
            self._rir = synthetic_rir(*self._echo)
        self.talkers = []
        for path, at in zip(self._paths, self._at, strict=True):
            clip = read_mono(path, ASR_RATE) * self._speech_gain
            self.talkers.append(Talker(path, at, clip.astype(np.float32), onset_s(clip)))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(on_block,), name="room-mic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def _run(self, on_block: BlockCallback) -> None:
        rng = np.random.default_rng(11)
        n, taps = self.block, len(self._rir)
        t_start = time.monotonic_ns()
        sent = 0
        while not self._stop.is_set():
            end_ns = t_start + int((sent + n) * 1e9 / ASR_RATE)  # capture time of this block's last sample
            wait = (end_ns - time.monotonic_ns()) / 1e9
            if wait > 0 and self._stop.wait(wait):
                return
            first_ns = end_ns - int((n - 1) * 1e9 / ASR_RATE)
            block = self._echo_of(first_ns, n, taps)
            self._add_talkers(block, first_ns)
            if self._noise is not None:
                block += (rng.standard_normal(n) * self._noise).astype(np.float32)
            sent += n
            on_block(np.clip(block, -1.0, 1.0).astype(np.float32), end_ns)

    def _echo_of(self, first_ns: int, n: int, taps: int) -> F32:
        """What the speaker's output sounds like at the microphone for these `n` samples."""
        hist = self._far.read(first_ns - int((taps - 1) * 1e9 / ASR_RATE), n + taps - 1)
        if not hist.any():
            return np.zeros(n, np.float32)
        return np.convolve(hist, self._rir, mode="valid").astype(np.float32)

    def _add_talkers(self, block: F32, first_ns: int) -> None:
        if self._t0_ns is None:
            return
        for t in self.talkers:
            start = (first_ns - self._t0_ns) / 1e9 - t.at_s
            i0 = round(start * ASR_RATE)
            lo, hi = max(0, i0), min(len(t.clip), i0 + len(block))
            if hi > lo:
                block[lo - i0:hi - i0] += t.clip[lo:hi]
