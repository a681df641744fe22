"""Wire schemas of the audio service: what goes over HTTP and SSE, validated before any work starts.

Requests follow OpenAI's audio API where one exists (`/v1/audio/transcriptions`, `/v1/audio/speech`);
`/v1/say`, `/v1/stop` and the events are Watus' own, typed in `watus.core.wire.audio`. Unknown request
fields are accepted and ignored (clients send new OpenAI fields before servers know them); values the
service cannot honour are 400s. The `model` of a request is informational: this process serves the one
ASR model and the voices its settings name, and OpenAI clients must send some model name (e.g. `whisper-1`, `tts-1`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The events and the say/stop commands are the shared contract (the agent reads and sends them):
from watus.core.wire.audio import SayRequest, SayResponse, StopResponse

__all__ = ["OPENAI_PCM_RATE", "SayRequest", "SayResponse", "Segment", "SpeechRequest", "StopResponse",
           "TranscriptionJson", "TranscriptionUsage", "TranscriptionVerbose", "Word"]

#: OpenAI's `pcm` response format is 16-bit little-endian mono at this rate.
OPENAI_PCM_RATE = 24_000


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class SpeechRequest(_Lenient):
    """`POST /v1/audio/speech` (OpenAI-compatible)."""

    model: str = Field("tts-1", max_length=256)
    input: str
    voice: str | None = Field(None, max_length=256)
    response_format: str = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: str = "audio"


class Word(BaseModel):
    word: str
    start: float
    end: float
    probability: float | None = None


class Segment(BaseModel):
    """A segment of `verbose_json` (OpenAI's fields; `tokens` are Whisper token ids)."""

    id: int
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


class TranscriptionUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionJson(BaseModel):
    text: str
    usage: TranscriptionUsage


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[Segment]
    words: list[Word] | None = None
    usage: TranscriptionUsage
