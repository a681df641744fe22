"""The audio service's contract: its events (`GET /v1/events`) and the say/stop commands.

The audio service reports facts — speech it heard, transcripts, audio it synthesised and played — and
obeys commands (`say`, `stop`). It never decides what a turn is: the agent does (`watus.agent.turns`).
An utterance's `turn_id` is made by the audio service when speech ends; the agent adopts it as the id
of the turn it starts from that utterance, and sends it back with every `say` of the reply.

Every event has `type` (also the SSE `event:` name) and `t_ns`, when it happened on the machine-wide
monotonic clock. `AudioEvent` is the discriminated union on `type`; `parse_event` validates one.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from watus.core.timing import clean_turn_id
from watus.core.wire.errors import WireError


def check_turn_id(v: str | None) -> str | None:
    if v is None:
        return None
    if clean_turn_id(v) is None:
        raise ValueError("turn_id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    return v


class _Event(BaseModel):
    # Strict: a producer that adds or misspells a field fails where it builds the event.
    model_config = ConfigDict(extra="forbid")

    t_ns: int = Field(description="When it happened, time.monotonic_ns().")

    def sse(self) -> str:
        kind = getattr(self, "type", "message")
        return f"event: {kind}\ndata: {self.model_dump_json()}\n\n"


class StatusEvent(_Event):
    """The first event of every stream: a snapshot of `GET /health` (its fields, as /health documents)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["status"] = "status"
    turn_id: None = None
    status: str = Field(description="ok, degraded, loading or error.")


class MicEvent(_Event):
    """The microphone's state changed (opened, failed, retrying, finished)."""

    type: Literal["mic"] = "mic"
    turn_id: None = None
    state: str = Field(description="starting, running, retrying, finished or stopped.")
    device: str | None = None
    sample_rate: int | None = None
    error: str | None = None
    attempts: int = Field(0, description="Consecutive failed attempts to open it.")
    next_retry_s: float | None = None
    restarts: int = Field(0, description="Failed attempts since the service started.")


class SpeechStarted(_Event):
    """The VAD heard speech start. `t_ns` is when it decided; `captured_ns` when that audio was captured."""

    type: Literal["speech_started"] = "speech_started"
    turn_id: str | None = Field(None, description="The utterance's id (the same in its speculative and final "
                                "transcripts).")
    audio_s: float = Field(description="Position of the speech start in the input stream, seconds.")
    captured_ns: int = Field(description="Capture time of the first speech frame.")
    during_playback: bool = Field(False, description="The robot was talking when the speech started.")
    barge_in: bool = Field(False, description="The audio service stopped playback itself because the `say` "
                           "request playing asked it to (`SayRequest.barge_in`).")


class SpeechEnded(_Event):
    """End of an utterance (`t_ns` is t0, the VAD's end-of-speech decision), or a dropped one."""

    type: Literal["speech_ended"] = "speech_ended"
    turn_id: str | None = Field(None, description="The utterance's id; None for a dropped one.")
    audio_s: float = Field(description="Position of the end in the input stream, seconds.")
    speech_ms: float | None = Field(None, description="Length of the utterance.")
    reason: str | None = Field(None, description="silence, max_length or end_of_input.")
    captured_ns: int | None = Field(None, description="Capture time of the last speech frame: the true end of "
                                    "speech, before the silence tail.")
    dropped: str | None = Field(None, description="Why the utterance was dropped (too short, ...).")


class Transcript(_Event):
    """What the utterance said. `t_ns` is when the transcript was ready."""

    type: Literal["transcript"] = "transcript"
    turn_id: str
    text: str
    language: str | None = None
    language_probability: float | None = None
    t0_ns: int = Field(description="End of speech as the VAD decided it (the speech_ended event's t_ns).")
    speech_started_ns: int = Field(description="When the VAD decided speech started.")
    speech_end_captured_ns: int | None = Field(None, description="Capture time of the last speech frame.")
    audio_start_s: float
    audio_end_s: float
    stages_ms: dict[str, float] = Field(default_factory=dict, description="The audio service's own stages: "
                                        "speech, end_silence, asr_queue, asr, eos_to_transcript.")
    speculative: bool = Field(False, description="The transcript was started at the first pause.")
    rtf: float | None = Field(None, description="ASR time / audio time.")
    asr_window_s: float | None = Field(None, description="Audio the ASR encoder read: Whisper's 30 s window, or "
                                       "the utterance's fitted one (`WATUS_AUDIO_ASR_FIT_WINDOW`).")
    barge_in: bool = Field(False, description="The utterance started while the robot was talking.")


class SpeculativeTranscript(_Event):
    """What the utterance said up to its first pause, before its end is known (`t_ns`: when ready).

    The agent may start the reply at once and hold its audio (`SayRequest.hold`) until the final
    `transcript` of the same `turn_id` confirms the text; `speech_resumed` means it was not the end.
    """

    type: Literal["speculative_transcript"] = "speculative_transcript"
    turn_id: str
    text: str
    language: str | None = None
    pause_ns: int = Field(description="When the pause was detected (the speech had stopped `pause` ms before).")
    speech_end_captured_ns: int = Field(description="Capture time of the last speech frame before the pause.")
    asr_ms: float = Field(description="Transcription time of this pass.")


class SpeechResumed(_Event):
    """Speech went on after a pause: the utterance (and any speculative transcript of it) is not over."""

    type: Literal["speech_resumed"] = "speech_resumed"
    turn_id: str


class TurnEnd(_Event):
    """How the end of an utterance was decided, and after how much silence (`t_ns`: the decision)."""

    type: Literal["turn_end"] = "turn_end"
    turn_id: str
    decision: str = Field(description="complete (the end-of-turn model), incomplete (it asked to wait longer), "
                          "silence (the silence tail), max_length or end_of_input.")
    probability: float | None = Field(None, description="The end-of-turn model's probability that the turn was "
                                      "complete, where it ran.")
    silence_ms: float = Field(description="Silence after the last speech frame when the turn ended.")
    model_ms: float | None = Field(None, description="Inference time of the end-of-turn model.")


class TtsAudio(_Event):
    """The first audio of a `say` request exists (synthesised, not yet played)."""

    type: Literal["tts_audio"] = "tts_audio"
    turn_id: str
    first_audio_ms: float = Field(description="From the say request to its first synthesised audio.")


class PlaybackStarted(_Event):
    """The first block of a turn's audio was handed to the device (`t_ns`: t1 of the turn)."""

    type: Literal["playback_started"] = "playback_started"
    turn_id: str
    first_audio_ms: float = Field(description="From the say request to its first sample played.")


class PlaybackFinished(_Event):
    """The speaker went idle after a turn's audio; `final` once the turn's last text (say `final`) played."""

    type: Literal["playback_finished"] = "playback_finished"
    turn_id: str | None
    played_ms: float
    final: bool = False


class Interrupted(_Event):
    """Playback (or synthesis) stopped before its end: by `stop`, a new say with `interrupt`, or barge-in."""

    type: Literal["interrupted"] = "interrupted"
    turn_id: str | None = None
    reason: str = Field(description="stop, replaced, barge_in, device_error or shutdown.")
    played_ms: float = 0.0
    stop_ms: float = Field(0.0, description="From the request to the device being silent.")
    requested_ns: int | None = None


class PlaybackPaused(_Event):
    """Speech was heard while the robot talked: playback is paused until it proves to be words or not.

    Words (the utterance's `transcript`): the agent decides, normally stopping the reply (barge-in).
    No words (a cough, a "mhm", nothing transcribed): `playback_resumed` follows, from where it paused.
    """

    type: Literal["playback_paused"] = "playback_paused"
    turn_id: str | None = Field(None, description="The turn whose playback paused.")
    onset_captured_ns: int = Field(description="Capture time of the first frame of the speech that paused it.")
    stop_ms: float = Field(description="From that speech's first frame to the device being silent.")


class PlaybackResumed(_Event):
    """A pause ended without a barge-in: the reply plays on from where it paused (a false interruption)."""

    type: Literal["playback_resumed"] = "playback_resumed"
    turn_id: str | None = None
    reason: str = Field(description="no_words (the speech was transcribed as nothing or a filler), "
                        "not_speech (too short to be an utterance), timeout (no transcript with words in "
                        "time) or request (`POST /v1/resume`).")
    paused_ms: float = Field(description="How long playback was paused.")
    text: str | None = Field(None, description="What the speech was transcribed as, if it was.")


class WakeWord(_Event):
    """The wake word was heard on the microphone (`WATUS_AUDIO_WAKE_WORD`)."""

    type: Literal["wake_word"] = "wake_word"
    turn_id: None = None
    model: str
    phrase: str
    probability: float
    captured_ns: int = Field(description="Capture time of the audio in which it fired.")


AudioEvent = Annotated[
    StatusEvent | MicEvent | SpeechStarted | SpeechEnded | Transcript | SpeculativeTranscript | SpeechResumed
    | TurnEnd | TtsAudio | PlaybackStarted | PlaybackFinished | Interrupted | PlaybackPaused | PlaybackResumed
    | WakeWord,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = ("status", "mic", "speech_started", "speech_ended", "transcript",
                                "speculative_transcript", "speech_resumed", "turn_end", "tts_audio",
                                "playback_started", "playback_finished", "interrupted", "playback_paused",
                                "playback_resumed", "wake_word")
_ADAPTER: TypeAdapter[AudioEvent] = TypeAdapter(AudioEvent)


def parse_event(data: Any) -> AudioEvent:
    """One event from its JSON object (or JSON text); raises `WireError` if it does not validate."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise WireError("json", f"not JSON: {e}") from None
    kind = str(data.get("type", "unknown")) if isinstance(data, dict) else "unknown"
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise WireError(kind, f"{where}: {first.get('msg')}" if where else str(first.get("msg"))) from None


# --- commands -----------------------------------------------------------------------------------------


class _Lenient(BaseModel):
    # Requests accept unknown fields (clients may send newer ones); values it cannot honour are 400s.
    model_config = ConfigDict(extra="allow")


class SayRequest(_Lenient):
    """`POST /v1/say`: queue text on the robot's speaker."""

    text: str = Field(description="What to say; empty only with `final` (the end-of-turn marker).")
    turn_id: str | None = None
    voice: str | None = Field(None, max_length=256)
    speed: float = Field(1.0, ge=0.25, le=4.0)
    interrupt: bool = Field(False, description="Stop what is playing and clear the queue first.")
    final: bool = Field(False, description="The last text of this turn: the `playback_finished` event after it "
                        "has played carries `final: true`, so the caller knows the whole reply was spoken. "
                        "With empty `text`, only marks the end of the turn.")
    sequential: bool = Field(False, description="Synthesise all of the text before playing any of it (the "
                             "baseline of `watus bench e2e`; normally each sentence plays as soon as it exists).")
    barge_in: bool | None = Field(None, description="Stop this playback by itself when speech starts. The agent "
                                  "sends false and decides barge-in itself; empty: the service's "
                                  "`WATUS_AUDIO_BARGE_IN` setting (for direct callers).")
    hold: bool = Field(False, description="Synthesise now but play nothing of this turn until `POST /v1/release` "
                       "names it (a preemptive reply, started before the end of the turn was certain).")

    @field_validator("turn_id")
    @classmethod
    def _turn(cls, v: str | None) -> str | None:
        return check_turn_id(v)


class SayResponse(BaseModel):
    turn_id: str
    sentences: int
    queue_depth: int


class StopResponse(BaseModel):
    stopped: bool
    cleared: int


class ReleaseRequest(_Lenient):
    """`POST /v1/release`: play what is held for this turn, and whatever of it comes next."""

    turn_id: str

    @field_validator("turn_id")
    @classmethod
    def _turn(cls, v: str) -> str:
        checked = check_turn_id(v)
        assert checked is not None
        return checked


class ResumeResponse(BaseModel):
    resumed: bool = Field(description="Whether playback was paused (and now plays on).")


class ReleaseResponse(BaseModel):
    turn_id: str
    released: bool = Field(description="Whether anything of the turn was held.")
    chunks: int = Field(description="Audio chunks that were waiting.")
