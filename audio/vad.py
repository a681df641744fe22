"""Voice activity detection, frame by frame on 16 kHz audio: Silero v6 (ONNX) or webrtcvad.

Both give a speech probability per frame; the segmenter turns probabilities into utterances. Silero
v6 ships inside faster-whisper (no torch): one 32 ms frame costs ~0.3 ms on a CPU core, so it runs
in the listener thread as the audio arrives. webrtcvad decides in microseconds but only says 0 or 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from audio.pcm import ASR_RATE, F32, to_int16
from audio.settings import AudioSettings, VadEngineKind

log = logging.getLogger(__name__)


class VadError(Exception):
    """The VAD could not be loaded (missing package or model file)."""


class Vad(Protocol):
    """Speech probability of consecutive frames of `frame_samples` samples at 16 kHz."""

    name: str
    frame_samples: int

    def __call__(self, frame: F32) -> float: ...

    def reset(self) -> None: ...


def silero_model_path() -> Path:
    import faster_whisper

    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


class SileroVad:
    """Silero v6 with its recurrent state and 64 samples of context carried between frames."""

    name = "silero"
    frame_samples = 512
    _context = 64

    def __init__(self, path: Path | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as e:  # pragma: no cover - onnxruntime comes with faster-whisper
            raise VadError("Silero VAD needs onnxruntime: pip install 'watus[audio]'") from e
        path = path or silero_model_path()
        if not path.is_file():
            raise VadError(f"Silero VAD model not found at {path} (comes with faster-whisper)")
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session: Any = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                                          sess_options=opts)
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._ctx = np.zeros(self._context, dtype=np.float32)

    def __call__(self, frame: F32) -> float:
        x = np.concatenate([self._ctx, frame.astype(np.float32, copy=False)])[None, :]
        out, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._ctx = frame[-self._context:].astype(np.float32, copy=True)
        return float(np.asarray(out).reshape(-1)[0])


class WebRtcVad:
    """webrtcvad on 30 ms frames; the probability is 0.0 or 1.0."""

    name = "webrtc"
    frame_samples = 480

    def __init__(self, mode: int) -> None:
        try:
            import webrtcvad
        except ImportError as e:
            raise VadError("webrtc VAD needs the package webrtcvad-wheels: pip install webrtcvad-wheels") from e
        self._vad = webrtcvad.Vad(mode)

    def reset(self) -> None:
        pass

    def __call__(self, frame: F32) -> float:
        return 1.0 if self._vad.is_speech(to_int16(frame).tobytes(), ASR_RATE) else 0.0


def select_vad(settings: AudioSettings) -> Vad:
    """A new VAD instance (one per audio stream: they keep state)."""
    if settings.vad_engine is VadEngineKind.webrtc:
        return WebRtcVad(settings.vad_webrtc_mode)
    return SileroVad()
