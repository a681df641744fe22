"""Device interfaces: a microphone (`AudioSource`) and a speaker (`AudioSink`).

Real hardware (sounddevice), WAV files and the null speaker all implement these, so the listening and
speaking pipelines never know which they talk to. A source calls back from its own thread with mono
float32 blocks and must never block there; a sink's `write` blocks the playback thread until the
device takes the block, like a real output stream, so playback is paced by the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from audio.pcm import F32

#: (block of mono float32 at the source's rate, monotonic ns when its last sample was captured)
BlockCallback = Callable[[F32, int], None]
#: None at the end of the input (a file), else the error that stopped the device.
EndCallback = Callable[[BaseException | None], None]


class DeviceError(Exception):
    """A device could not be opened or stopped working (unplugged, busy, no such device)."""


class AudioSource(Protocol):
    name: str
    sample_rate: int
    #: True when blocks arrive at the pace of time (a device, a file in real time).
    realtime: bool

    def start(self, on_block: BlockCallback, on_end: EndCallback) -> None:
        """Open and start delivering blocks; raises DeviceError when it cannot."""
        ...

    def stop(self) -> None: ...


class AudioSink(Protocol):
    name: str
    sample_rate: int

    def open(self) -> None: ...

    def write(self, block: F32, turn_id: str | None) -> int:
        """Queue `block` for playback, blocking until the device takes it; returns when it starts (ns)."""
        ...

    def pending_s(self) -> float:
        """Seconds of audio handed over that have not played yet."""
        ...

    def abort(self) -> None:
        """Drop queued audio now (barge-in)."""
        ...

    def close(self) -> None: ...
