"""The far end: what the speaker played, exactly as played, on the machine-wide monotonic clock.

The echo canceller needs the loudspeaker's signal as its reference, aligned with the microphone by
time; the virtual room (`audio.devices.room`) needs the same signal to make its echo. Both read it here.
`TappedSink` wraps any speaker: every block it hands to the device is recorded at 16 kHz at the time
the device says it starts playing (a sounddevice speaker adds its output latency; the WAV speaker is
exact), and an abort (barge-in, pause) erases what was scheduled but not yet heard. Reads of times
nothing was played give zeros, so a reader never waits.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from audio.devices.base import AudioSink
from audio.pcm import ASR_RATE, F32, resample

#: Blocks that start within this much of where the previous one ended are joined (device clock jitter).
_SNAP_S = 0.005


class FarEnd:
    """A ring buffer of played audio at `rate`, indexed by absolute sample position since the first block."""

    def __init__(self, rate: int = ASR_RATE, keep_s: float = 10.0) -> None:
        self.rate = rate
        self._ring = np.zeros(max(rate, int(keep_s * rate)), np.float32)
        self._epoch_ns: int | None = None  # time of sample position 0
        self._until = 0  # one past the last position written
        self._lock = threading.Lock()
        self.played_samples = 0  # total, for the metrics

    def _pos(self, t_ns: int) -> int:
        assert self._epoch_ns is not None
        return round((t_ns - self._epoch_ns) * self.rate / 1e9)

    def play(self, block: F32, rate: int, start_ns: int) -> None:
        """Record `block` (at `rate`) as starting to play at `start_ns`."""
        pcm = resample(np.asarray(block, np.float32), rate, self.rate) if rate != self.rate else block
        if not len(pcm):
            return
        with self._lock:
            if self._epoch_ns is None:
                self._epoch_ns = start_ns
            pos = self._pos(start_ns)
            if abs(pos - self._until) <= _SNAP_S * self.rate:
                pos = self._until  # contiguous with the previous block: no gap, no overlap from jitter
            elif pos > self._until:
                self._zero(self._until, pos)
            self._write(pos, pcm)
            self._until = max(self._until, pos + len(pcm))
            self.played_samples += len(pcm)

    def abort(self, at_ns: int) -> None:
        """Nothing scheduled after `at_ns` will be heard (the device dropped its buffer)."""
        with self._lock:
            if self._epoch_ns is None:
                return
            pos = max(0, self._pos(at_ns))
            if pos < self._until:
                self._zero(pos, self._until)
                self._until = pos

    def read(self, start_ns: int, n: int) -> F32:
        """The `n` samples played from `start_ns` on (zeros where nothing played or it is no longer kept)."""
        out = np.zeros(n, np.float32)
        with self._lock:
            if self._epoch_ns is None or n <= 0:
                return out
            pos = self._pos(start_ns)
            lo, hi = max(pos, self._until - len(self._ring)), min(pos + n, self._until)
            if hi > lo:
                out[lo - pos:hi - pos] = self._take(lo, hi)
        return out

    def peak_dbfs(self, end_ns: int, window_ns: int) -> float | None:
        """The loudest 20 ms (RMS dBFS) played in the `window_ns` before `end_ns`; None if silent."""
        recent = self.read(end_ns - window_ns, window_ns * self.rate // 1_000_000_000)
        n = self.rate // 50
        k = len(recent) // n
        if k == 0 or not recent.any():
            return None
        peak = float(np.sqrt(np.max(np.mean(recent[:k * n].reshape(k, n) ** 2, axis=1))))
        return 20 * float(np.log10(max(peak, 1e-9)))

    def _idx(self, pos: int) -> int:
        return pos % len(self._ring)

    def _write(self, pos: int, pcm: F32) -> None:
        size = len(self._ring)
        if len(pcm) > size:
            pos, pcm = pos + len(pcm) - size, pcm[-size:]
        i = self._idx(pos)
        first = min(len(pcm), size - i)
        self._ring[i:i + first] = pcm[:first]
        self._ring[:len(pcm) - first] = pcm[first:]

    def _zero(self, lo: int, hi: int) -> None:
        if hi > lo:
            self._write(lo, np.zeros(min(hi - lo, len(self._ring)), np.float32))

    def _take(self, lo: int, hi: int) -> F32:
        i, n, size = self._idx(lo), hi - lo, len(self._ring)
        first = min(n, size - i)
        return np.concatenate([self._ring[i:i + first], self._ring[:n - first]])


class TappedSink:
    """A speaker that also records what it plays into a `FarEnd` (the reference of the echo canceller)."""

    def __init__(self, sink: AudioSink, far: FarEnd) -> None:
        self.inner = sink
        self.far = far
        self.name = sink.name

    @property
    def sample_rate(self) -> int:
        return self.inner.sample_rate

    @sample_rate.setter
    def sample_rate(self, rate: int) -> None:
        self.inner.sample_rate = rate

    def open(self) -> None:
        self.inner.open()

    def write(self, block: F32, turn_id: str | None) -> int:
        start = self.inner.write(block, turn_id)
        self.far.play(block, self.inner.sample_rate, start)
        return start

    def pending_s(self) -> float:
        return self.inner.pending_s()

    def abort(self) -> None:
        now = time.monotonic_ns()
        self.inner.abort()
        self.far.abort(now)

    def close(self) -> None:
        self.inner.close()
