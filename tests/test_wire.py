"""The typed contracts between the processes (`watus.core.wire`): producers, consumers, bad messages."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from watus.agent.audio_client import AudioClient
from watus.core.wire import WireError
from watus.core.wire.audio import (
    EVENT_TYPES,
    Interrupted,
    PlaybackFinished,
    SayRequest,
    SpeechEnded,
    SpeechStarted,
    Transcript,
    TtsAudio,
    parse_event,
)


def test_every_event_type_round_trips_through_json() -> None:
    events = [
        SpeechStarted(t_ns=1, audio_s=0.5, captured_ns=0, during_playback=True),
        SpeechEnded(t_ns=2, turn_id="u1", audio_s=1.5, speech_ms=900.0, reason="silence", captured_ns=1),
        Transcript(t_ns=3, turn_id="u1", text="hi", t0_ns=2, speech_started_ns=1, audio_start_s=0.5,
                   audio_end_s=1.4, stages_ms={"asr": 40.0}),
        TtsAudio(t_ns=4, turn_id="u1", first_audio_ms=60.0),
        PlaybackFinished(t_ns=5, turn_id="u1", played_ms=800.0, final=True),
        Interrupted(t_ns=6, reason="stop"),
    ]
    for ev in events:
        back = parse_event(ev.model_dump_json())
        assert type(back) is type(ev) and back == ev
        assert ev.sse().startswith(f"event: {ev.type}\ndata: {{")
    assert {type(ev).model_fields["type"].default for ev in events} <= set(EVENT_TYPES)


def test_a_renamed_or_missing_field_fails_at_both_ends() -> None:
    with pytest.raises(ValueError, match="t0"):  # the producer: a misspelt field does not build
        Transcript(t_ns=3, turn_id="u1", text="hi", t0=2, speech_started_ns=1,  # type: ignore[call-arg]
                   audio_start_s=0.5, audio_end_s=1.4)
    good = json.loads(Transcript(t_ns=3, turn_id="u1", text="hi", t0_ns=2, speech_started_ns=1, audio_start_s=0.5,
                                 audio_end_s=1.4).model_dump_json())
    renamed = {("t_zero_ns" if k == "t0_ns" else k): v for k, v in good.items()}
    with pytest.raises(WireError) as e:  # the consumer: never defaults t0 to "now"
        parse_event(renamed)
    assert e.value.kind == "transcript" and "t0_ns" in str(e.value)
    with pytest.raises(WireError) as e:
        parse_event({"type": "levitated", "t_ns": 1})
    assert e.value.kind == "levitated"
    with pytest.raises(WireError) as e:
        parse_event("{not json")
    assert e.value.kind == "json"


def test_say_request_checks_the_turn_id_and_keeps_unknown_fields() -> None:
    with pytest.raises(ValueError, match="turn_id"):
        SayRequest(text="hi", turn_id="bad id with spaces")
    req = SayRequest.model_validate({"text": "hi", "future_field": 1})
    assert req.barge_in is None and req.final is False


async def test_the_agent_skips_and_counts_an_event_that_breaks_the_contract() -> None:
    good = TtsAudio(t_ns=4, turn_id="u1", first_audio_ms=60.0).sse()
    bad = 'event: tts_audio\ndata: {"type": "tts_audio", "t_ns": 5}\n\n'  # no turn_id
    app = FastAPI()

    @app.get("/v1/events")
    async def events() -> StreamingResponse:
        async def body():  # type: ignore[no-untyped-def]
            yield bad
            yield good
            yield "data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    invalid: list[WireError] = []
    client = AudioClient("http://audio", 5.0, on_invalid=invalid.append, transport=httpx.ASGITransport(app=app))
    try:
        stream = client.events()
        first = await anext(stream)
        await stream.aclose()
    finally:
        await client.aclose()
    assert isinstance(first, TtsAudio) and first.t_ns == 4
    assert [(e.kind, "turn_id" in e.detail) for e in invalid] == [("tts_audio", True)]
