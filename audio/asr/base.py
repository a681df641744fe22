"""The ASR engine interface: load once, then transcribe 16 kHz mono float32 audio into segments.

`transcribe` returns what is known before decoding (language, duration) and a lazy iterator of
segments; the runner drains that iterator inside the model's worker thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from audio.pcm import F32


class AsrError(Exception):
    """The ASR engine failed to load or to transcribe."""


class AsrNotInstalledError(AsrError):
    """The engine's library is missing; the message says what to install."""


class AsrModelNotFoundError(AsrError):
    """The model folder does not exist or is incomplete; the message names the setting or package."""


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None
    prompt: str | None = None
    hotwords: str | None = None
    beam_size: int = 1
    temperature: float = 0.0
    word_timestamps: bool = False
    # Encode only the utterance plus padding (`audio.asr.fitted`): for live turns the reply waits on.
    fit_window: bool = False
    # With `fit_window`: a transcript without any of the hotwords is done again on the full window.
    hotword_check: bool = False


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class AsrSegment:
    id: int
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    words: list[WordTiming] = field(default_factory=list)


@dataclass(frozen=True)
class AsrInfo:
    language: str
    language_probability: float
    duration: float
    window_s: float = 30.0  # audio the encoder read per pass: Whisper's 30 s, or the fitted window


class AsrEngine(Protocol):
    """A speech recogniser; not thread-safe (one worker thread per engine)."""

    name: str
    model_id: str
    multilingual: bool

    def load(self) -> None: ...

    def ready(self) -> bool: ...

    def transcribe(self, audio: F32, options: TranscribeOptions) -> tuple[AsrInfo, Iterator[AsrSegment]]: ...
