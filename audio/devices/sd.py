"""Real sound hardware through sounddevice (PortAudio): the robot's microphone and speaker.

The capture callback runs on PortAudio's thread: it copies the block and hands it on, nothing else
(the listener's queue is bounded and never blocks). Rates: the microphone opens at 16 kHz when the
device takes it, else at its default rate (the listener resamples); the speaker opens at the voice's
rate when possible, else at the device's (the speaker resamples). A stream that stops by itself
(device unplugged) reports a DeviceError through `on_end`, and the supervisor reopens it with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from audio.devices.base import BlockCallback, DeviceError, EndCallback
from audio.pcm import F32

log = logging.getLogger(__name__)


def _sd() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as e:  # OSError: libportaudio2 missing
        raise DeviceError(f"sounddevice/PortAudio unavailable ({e}): pip install sounddevice and apt-get install "
                          "libportaudio2") from None
    return sounddevice


def device_spec(value: str | None) -> int | str | None:
    """A device setting as sounddevice takes it: an index, a name substring, or None (default)."""
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else value


def has_device(kind: str) -> bool:
    """Whether PortAudio lists at least one input (`kind="input"`) or output device."""
    try:
        sd = _sd()
        key = "max_input_channels" if kind == "input" else "max_output_channels"
        return any(d[key] > 0 for d in sd.query_devices())
    except (DeviceError, Exception):  # PortAudio raises its own error types while probing
        return False


def _pick_rate(check: Callable[..., None], device: int | str | None, wanted: int | None, preferred: int,
               kind: str) -> int:
    sd = _sd()
    for rate in (r for r in (wanted, preferred) if r):
        try:
            check(device=device, samplerate=rate, channels=1, dtype="float32")
            return rate
        except Exception:  # PortAudioError or ValueError: that rate is not supported
            if wanted is not None and rate == wanted:
                raise DeviceError(f"{kind} device {device!r} does not take {rate} Hz") from None
    try:
        info = sd.query_devices(device, kind)
    except Exception as e:
        raise DeviceError(f"no {kind} device {device!r}: {e}") from None
    return int(info["default_samplerate"])


class SoundDeviceMic:
    realtime = True

    def __init__(self, device: str | None, sample_rate: int | None, block_ms: int,
                 on_overflow: Callable[[], None] | None = None) -> None:
        self.device = device_spec(device)
        self._wanted_rate = sample_rate
        self._block_ms = block_ms
        self._on_overflow = on_overflow
        self._stream: Any = None
        self._stopping = False
        self.sample_rate = sample_rate or 16_000
        self.name = f"sounddevice:{device if device is not None else 'default'}"

    def start(self, on_block: BlockCallback, on_end: EndCallback) -> None:
        sd = _sd()
        self.sample_rate = _pick_rate(sd.check_input_settings, self.device, self._wanted_rate, 16_000, "input")
        self._stopping = False

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            if status.input_overflow and self._on_overflow is not None:
                self._on_overflow()
            on_block(np.array(indata[:, 0], dtype=np.float32), time.monotonic_ns())

        def finished() -> None:
            if not self._stopping:
                on_end(DeviceError(f"input stream of {self.name} stopped"))

        try:
            self._stream = sd.InputStream(device=self.device, samplerate=self.sample_rate, channels=1,
                                          dtype="float32", blocksize=self.sample_rate * self._block_ms // 1000,
                                          callback=callback, finished_callback=finished)
            self._stream.start()
        except Exception as e:  # PortAudioError, ValueError (no such device)
            self._stream = None
            raise DeviceError(f"cannot open microphone {self.name}: {e}") from None
        log.info("microphone %s open at %d Hz", self.name, self.sample_rate)

    def stop(self) -> None:
        self._stopping = True
        if self._stream is not None:
            try:
                self._stream.abort()
                self._stream.close()
            except Exception as e:  # a vanished device fails to close; it is gone either way
                log.debug("closing %s: %s", self.name, e)
            self._stream = None


class SoundDeviceSpeaker:
    def __init__(self, device: str | None, sample_rate: int | None, preferred_rate: int) -> None:
        self.device = device_spec(device)
        self._wanted_rate = sample_rate
        self._preferred = preferred_rate
        self.sample_rate = sample_rate or preferred_rate
        self.name = f"sounddevice:{device if device is not None else 'default'}"
        self._stream: Any = None
        self._lock = threading.Lock()

    def open(self) -> None:
        sd = _sd()
        self.sample_rate = _pick_rate(sd.check_output_settings, self.device, self._wanted_rate, self._preferred,
                                      "output")
        try:
            self._stream = sd.OutputStream(device=self.device, samplerate=self.sample_rate, channels=1,
                                           dtype="float32", latency="low")
            self._stream.start()
        except Exception as e:
            raise DeviceError(f"cannot open speaker {self.name}: {e}") from None
        log.info("speaker %s open at %d Hz", self.name, self.sample_rate)

    def write(self, block: F32, turn_id: str | None) -> int:
        with self._lock:
            if self._stream is None:
                self.open()
            try:
                self._stream.write(np.ascontiguousarray(block, dtype=np.float32).reshape(-1, 1))
            except Exception as e:
                self._stream = None
                raise DeviceError(f"speaker {self.name} failed: {e}") from None
            return time.monotonic_ns() + int(float(self._stream.latency) * 1e9)

    def pending_s(self) -> float:
        stream = self._stream
        return float(stream.latency) if stream is not None else 0.0

    def abort(self) -> None:
        with self._lock:
            if self._stream is not None:
                try:
                    self._stream.abort()  # drops what PortAudio buffered
                    self._stream.start()
                except Exception as e:
                    log.warning("speaker %s: abort failed: %s", self.name, e)
                    self._stream = None

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                try:
                    self._stream.close()
                except Exception as e:
                    log.debug("closing %s: %s", self.name, e)
                self._stream = None
