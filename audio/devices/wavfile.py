"""Virtual devices: a WAV file (or folder) as the microphone, a WAV file as the speaker.

They make every path of the service runnable and testable without sound hardware. The microphone
plays its files in real time (blocks paced by the clock, as a device delivers them) or as fast as
possible, with silence between files and at the end so the last utterance ends. The speaker plays at
the pace of time too (a write returns when the previous block has finished, as with a device of one
block of buffer), and records what would have been heard: the audio in a WAV file and, beside it, a
JSONL timeline (turn id, start and end on `time.monotonic_ns()`, aborts). With no path it is the null
speaker: same pacing, nothing kept.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import wave
from pathlib import Path
from typing import IO

import numpy as np

from audio.devices.base import BlockCallback, DeviceError, EndCallback
from audio.pcm import ASR_RATE, F32, resample, to_int16

log = logging.getLogger(__name__)


def list_wavs(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
        if not files:
            raise DeviceError(f"no audio files in {path}")
        return files
    if not path.is_file():
        raise DeviceError(f"microphone file not found: {path}")
    return [path]


def read_mono(path: Path, rate: int) -> F32:
    import soundfile as sf

    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DeviceError(f"cannot read {path}: {e}") from None
    return resample(audio.mean(axis=1).astype(np.float32), int(sr), rate)


class WavFileMic:
    """A WAV file or a folder of them as the microphone, at 16 kHz mono."""

    def __init__(self, path: Path, realtime: bool = True, loop: bool = False, gap_s: float = 1.0,
                 block_ms: int = 32) -> None:
        self.path = path
        self.realtime = realtime
        self.loop = loop
        self.gap_s = gap_s
        self.sample_rate = ASR_RATE
        self.block = max(1, ASR_RATE * block_ms // 1000)
        self.name = f"file:{path}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_block: BlockCallback, on_end: EndCallback) -> None:
        files = list_wavs(self.path)
        clips = [read_mono(f, self.sample_rate) for f in files]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(clips, on_block, on_end), name="wav-mic",
                                        daemon=True)
        self._thread.start()

    def _run(self, clips: list[F32], on_block: BlockCallback, on_end: EndCallback) -> None:
        gap = np.zeros(int(self.gap_s * self.sample_rate), np.float32)
        stream = np.concatenate([x for c in clips for x in (c, gap)])
        t_start, sent = time.monotonic(), 0
        while not self._stop.is_set():
            for i in range(0, len(stream), self.block):
                block = stream[i:i + self.block]
                sent += len(block)
                if self.realtime:
                    wait = t_start + sent / self.sample_rate - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return
                elif self._stop.is_set():
                    return
                on_block(block, time.monotonic_ns())
            if not self.loop:
                break
        if not self._stop.is_set():
            on_end(None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)


class WavSink:
    """Virtual speaker: paced like a device; records audio and a timeline when given a path."""

    def __init__(self, path: Path | None, sample_rate: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.name = f"wav:{path}" if path is not None else "null"
        self._wav: wave.Wave_write | None = None
        self._timeline: IO[str] | None = None
        self._play_end_ns = 0
        self._lock = threading.Lock()
        self._cut = threading.Event()

    def open(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - open until close(), like a device
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(self.sample_rate)
        self._timeline = self.path.with_suffix(".jsonl").open("w", encoding="utf-8")

    def _record(self, entry: dict[str, object]) -> None:
        if self._timeline is not None:
            self._timeline.write(json.dumps(entry) + "\n")
            self._timeline.flush()

    def write(self, block: F32, turn_id: str | None) -> int:
        dur_ns = int(len(block) * 1e9 / self.sample_rate)
        with self._lock:
            now = time.monotonic_ns()
            start = max(now, self._play_end_ns)
            self._play_end_ns = start + dur_ns
            if self._wav is not None:
                self._wav.writeframes(to_int16(block).tobytes())
            self._record({"turn_id": turn_id, "start_ns": start, "end_ns": start + dur_ns, "samples": len(block)})
        # One block of buffer: return once the previous block has played (this one starts).
        self._cut.clear()
        self._cut.wait(max(0.0, (start - time.monotonic_ns()) / 1e9))
        return start

    def pending_s(self) -> float:
        return max(0.0, (self._play_end_ns - time.monotonic_ns()) / 1e9)

    def abort(self) -> None:
        with self._lock:
            now = time.monotonic_ns()
            if self._play_end_ns > now:
                self._record({"abort_ns": now, "dropped_ms": (self._play_end_ns - now) / 1e6})
                self._play_end_ns = now
        self._cut.set()

    def close(self) -> None:
        with self._lock:
            if self._wav is not None:
                self._wav.close()
                self._wav = None
            if self._timeline is not None:
                self._timeline.close()
                self._timeline = None
