"""espeak-ng engine (the Debian program): every language it knows, e.g. Polish, robotic but instant.

A second engine beside piper for languages without a piper voice. Text goes through stdin (never the
command line, where it could be read as an option); the WAV it writes to stdout is parsed here.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from collections.abc import Iterator

import numpy as np

from audio.pcm import I16
from audio.tts.base import TtsError, TtsNotInstalledError

log = logging.getLogger(__name__)

#: espeak-ng speaks at 175 words per minute by default; `speed` scales that.
BASE_WPM = 175


class EspeakEngine:
    name = "espeak"
    sample_rate = 22050

    def __init__(self, default_voice: str = "en-us") -> None:
        self.default_voice = default_voice
        self._exe: str | None = None
        self._voices: list[str] = []

    def load(self) -> None:
        self._exe = shutil.which("espeak-ng")
        if self._exe is None:
            raise TtsNotInstalledError("espeak-ng is not installed: apt-get install espeak-ng")
        out = subprocess.run([self._exe, "--voices"], capture_output=True, text=True, timeout=10, check=False)
        names: list[str] = []
        for line in out.stdout.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 4:
                names.append(cols[1])  # the language code column: en-us, pl, de, ...
        self._voices = sorted(set(names))
        if self.default_voice not in self._voices:
            raise TtsError(f"espeak-ng has no voice {self.default_voice!r} (WATUS_AUDIO_TTS_ESPEAK_VOICE)")
        log.info("espeak-ng ready (%d voices)", len(self._voices))

    def ready(self) -> bool:
        return self._exe is not None

    def voices(self) -> list[str]:
        return list(self._voices)

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[I16]:
        import soundfile as sf

        if self._exe is None:
            raise TtsError("espeak-ng not loaded")
        wpm = str(max(80, min(500, round(BASE_WPM * speed))))
        proc = subprocess.run([self._exe, "-v", voice, "-s", wpm, "--stdout"], input=text.encode("utf-8"),
                              capture_output=True, timeout=60, check=False)
        if proc.returncode != 0 or len(proc.stdout) <= 44:
            raise TtsError(f"espeak-ng failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
        # espeak-ng streams its WAV with unknown sizes; libsndfile copes with that.
        audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="int16")
        if rate != self.sample_rate:
            raise TtsError(f"espeak-ng wrote {rate} Hz, expected {self.sample_rate}")
        yield np.asarray(audio, dtype=np.int16).reshape(-1)
