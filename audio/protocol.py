"""Wire schemas of the audio service: what goes over HTTP and SSE, validated before any work starts.

Requests follow OpenAI's audio API where one exists (`/v1/audio/transcriptions`, `/v1/audio/speech`);
`/v1/say`, `/v1/stop` and the events are Watus' own. Unknown request fields are accepted and ignored
(clients send new OpenAI fields before servers know them); values the service cannot honour are 400s.
The `model` of a request is informational: this process serves the one ASR model and the voices its
settings name, and OpenAI clients must send some model name (e.g. `whisper-1`, `tts-1`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from watus.timing import clean_turn_id

TranscriptionFormat = Literal["json", "text", "verbose_json"]
SpeechFormat = Literal["wav", "pcm"]

#: OpenAI's `pcm` response format is 16-bit little-endian mono at this rate.
OPENAI_PCM_RATE = 24_000


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


def _check_turn_id(v: str | None) -> str | None:
    if v is None:
        return None
    if clean_turn_id(v) is None:
        raise ValueError("turn_id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    return v


class SpeechRequest(_Lenient):
    """`POST /v1/audio/speech` (OpenAI-compatible)."""

    model: str = Field("tts-1", max_length=256)
    input: str
    voice: str | None = Field(None, max_length=256)
    response_format: str = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: str = "audio"


class SayRequest(_Lenient):
    """`POST /v1/say`: queue text on the robot's speaker."""

    text: str
    turn_id: str | None = None
    voice: str | None = Field(None, max_length=256)
    speed: float = Field(1.0, ge=0.25, le=4.0)
    interrupt: bool = Field(False, description="Stop what is playing and clear the queue first.")
    final: bool = Field(False, description="The last text of this turn: the `playback_finished` event after it "
                        "has played carries `final: true`, so the caller knows the whole reply was spoken.")
    sequential: bool = Field(False, description="Synthesise all of the text before playing any of it (the "
                             "baseline of `watus bench e2e`; normally each sentence plays as soon as it exists).")

    @field_validator("turn_id")
    @classmethod
    def _turn(cls, v: str | None) -> str | None:
        return _check_turn_id(v)


class SayResponse(BaseModel):
    turn_id: str
    sentences: int
    queue_depth: int


class StopResponse(BaseModel):
    stopped: bool
    cleared: int


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


class Event(BaseModel):
    """One SSE event: its `type` is also the SSE `event:` name; `t_ns` is `time.monotonic_ns()`."""

    model_config = ConfigDict(extra="allow")

    type: Literal["status", "speech_started", "speech_ended", "transcript", "tts_audio", "playback_started",
                  "playback_finished", "interrupted", "mic"]
    t_ns: int
    turn_id: str | None = None

    def sse(self) -> str:
        return f"event: {self.type}\ndata: {self.model_dump_json()}\n\n"


def event(type_: str, t_ns: int, turn_id: str | None = None, **fields: Any) -> Event:
    return Event.model_validate({"type": type_, "t_ns": t_ns, "turn_id": turn_id, **fields})
