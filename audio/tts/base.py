"""The TTS engine interface: load once, then synthesise text into 16-bit PCM chunks as they are ready.

A chunk is one sentence for piper (VITS synthesises a sentence at once) or one call for espeak-ng.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from audio.pcm import I16


class TtsError(Exception):
    """The TTS engine failed to load or to synthesise."""


class TtsNotInstalledError(TtsError):
    """The engine's library or program is missing; the message says what to install."""


class VoiceNotFoundError(TtsError):
    """The voice file is missing (a setting) or a request named a voice that is not loaded."""


class TtsEngine(Protocol):
    """A speech synthesiser; called from one worker thread."""

    name: str
    sample_rate: int

    def voices(self) -> list[str]: ...

    def load(self) -> None: ...

    def ready(self) -> bool: ...

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[I16]: ...
