"""The voice loop as a state machine, driven by typed audio events (no processes).

The loop owns each turn: these tests feed it the events the audio service would send and watch what it
commands (say, stop) and what it records. The brain is a real pydantic-ai agent over a `FunctionModel`
(the reply text is scripted), or over the real OpenAI client pointed at a port where nothing listens
(the LLM failing); the speaker is a recorder standing in for the audio service's HTTP API.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import free_port
from watus.agent.audio_client import AudioUnavailableError
from watus.agent.brain import Session, build_agent
from watus.agent.settings import AgentSettings
from watus.agent.turnlog import TurnLog
from watus.agent.turns import APOLOGY, BUG_APOLOGY
from watus.agent.voice import VoiceLoop
from watus.core.wire.audio import (
    AudioEvent,
    Interrupted,
    PlaybackFinished,
    PlaybackPaused,
    PlaybackResumed,
    PlaybackStarted,
    SpeculativeTranscript,
    SpeechEnded,
    SpeechResumed,
    SpeechStarted,
    Transcript,
    TtsAudio,
    WakeWord,
)

#: Generous: the loop reacts in microseconds; CI's 2 cores may be busy with other work.
WAIT_S = 20.0


@dataclass
class Said:
    text: str
    turn_id: str
    final: bool
    sequential: bool
    hold: bool = False


@dataclass
class RecordingSpeaker:
    """Records the loop's commands; `fail` makes `say` raise as an unreachable audio service would."""

    said: list[Said] = field(default_factory=list)
    stops: int = 0
    released: list[str] = field(default_factory=list)
    resumes: int = 0
    fail: bool = False

    async def say(self, text: str, turn_id: str, *, final: bool = False, interrupt: bool = False,
                  sequential: bool = False, hold: bool = False) -> dict[str, Any]:
        if self.fail:
            raise AudioUnavailableError("audio service not reachable (ConnectError)")
        self.said.append(Said(text, turn_id, final, sequential, hold))
        return {"turn_id": turn_id, "sentences": 1, "queue_depth": 1}

    async def release(self, turn_id: str) -> None:
        self.released.append(turn_id)

    async def stop(self) -> bool:
        self.stops += 1
        return True

    async def resume(self) -> bool:
        self.resumes += 1
        return True

    async def events(self) -> AsyncIterator[AudioEvent]:  # the tests call handle() themselves
        if False:
            yield


async def until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def transcript(turn_id: str, text: str, t0_ns: int | None = None) -> Transcript:
    now = time.monotonic_ns()
    t0 = t0_ns if t0_ns is not None else now - 80_000_000
    return Transcript(t_ns=now, turn_id=turn_id, text=text, language="en", t0_ns=t0,
                      speech_started_ns=t0 - 1_500_000_000, speech_end_captured_ns=t0 - 512_000_000,
                      audio_start_s=1.0, audio_end_s=2.5, stages_ms={"asr": 60.0, "end_silence": 512.0})


def scripted(*deltas: str, hold: asyncio.Event | None = None, closed: list[bool] | None = None,
             raise_: BaseException | None = None) -> FunctionModel:
    """A model whose reply streams `deltas`, then (with `hold`) waits; `closed` learns when it was closed."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        try:
            for d in deltas:
                yield d
            if raise_ is not None:
                raise raise_
            if hold is not None:
                await hold.wait()
        finally:
            if closed is not None:
                closed.append(True)

    return FunctionModel(stream_function=stream)


def make_loop(tmp_path: Path, model: Any = None, settings: AgentSettings | None = None,
              speaker: RecordingSpeaker | None = None) -> tuple[VoiceLoop, RecordingSpeaker, TurnLog]:
    settings = settings or AgentSettings()
    speaker = speaker or RecordingSpeaker()
    turn_log = TurnLog(tmp_path / "turns.jsonl")
    loop = VoiceLoop(settings, build_agent(settings, model), Session("s", 3), None, speaker, turn_log)
    return loop, speaker, turn_log


async def play_out(loop: VoiceLoop, turn_id: str, played_ms: float = 900.0) -> tuple[int, int]:
    """What the audio service reports while it plays a turn's reply: first audio, playback, the end."""
    first = time.monotonic_ns()
    await loop.handle(TtsAudio(t_ns=first, turn_id=turn_id, first_audio_ms=70.0))
    start = time.monotonic_ns()
    await loop.handle(PlaybackStarted(t_ns=start, turn_id=turn_id, first_audio_ms=75.0))
    await loop.handle(PlaybackFinished(t_ns=time.monotonic_ns(), turn_id=turn_id, played_ms=played_ms, final=True))
    return first, start


async def test_a_normal_turn_speaks_each_sentence_and_records_every_stage(tmp_path: Path) -> None:
    model = scripted("Hello there. ", "I can hear you", " well. Nice to meet you!")
    loop, speaker, turn_log = make_loop(tmp_path, model)
    ev = transcript("turn-1", "Hello robot")
    await loop.handle(ev)
    assert loop.current_turn == "turn-1"
    await until(lambda: any(s.final for s in speaker.said), "the final sentence")
    assert [(s.text, s.final) for s in speaker.said] == [
        ("Hello there.", False), ("I can hear you well.", False), ("Nice to meet you!", True)]
    assert {s.turn_id for s in speaker.said} == {"turn-1"} and not any(s.sequential for s in speaker.said)
    assert loop.turns_done == 0  # still playing: the turn is not over until its last text has played
    _, start = await play_out(loop, "turn-1")
    await until(lambda: loop.turns_done == 1, "the turn record")
    (rec,) = turn_log.read()
    assert rec["turn_id"] == "turn-1" and rec["transcript"] == "Hello robot"
    assert rec["reply"] == "Hello there. I can hear you well. Nice to meet you!"
    assert rec["interrupted"] is False and rec["error"] is None
    order = ["speech_end", "asr_done", "scene_fetched", "llm_first_token", "first_sentence", "tts_first_audio",
             "playback_start", "playback_end"]
    assert list(rec["t_ns"]) == order
    assert all(rec["t_ns"][a] <= rec["t_ns"][b] for a, b in itertools.pairwise(order))
    assert rec["t_ns"]["speech_end"] == ev.t0_ns and rec["t_ns"]["asr_done"] == ev.t_ns
    assert rec["e2e_ms"] == round((start - ev.t0_ns) / 1e6, 2)
    assert rec["perceived_ms"] == round((start - (ev.t0_ns - 512_000_000)) / 1e6, 2)
    assert rec["audio_ms"] == {"asr": 60.0, "end_silence": 512.0}
    assert loop.current_turn is None
    assert len(loop.session.history) == 2  # question and answer remembered


async def test_barge_in_during_the_first_sentence_closes_the_llm_stream_and_stops_playback(tmp_path: Path) -> None:
    hold, closed = asyncio.Event(), []
    model = scripted("Let me tell you a long story. ", "Once upon", " a time", hold=hold, closed=closed)
    loop, speaker, turn_log = make_loop(tmp_path, model)
    await loop.handle(transcript("turn-2", "Tell me a story"))
    await until(lambda: len(speaker.said) == 1, "the first sentence")
    await loop.handle(PlaybackStarted(t_ns=time.monotonic_ns(), turn_id="turn-2", first_audio_ms=70.0))
    now = time.monotonic_ns()
    # Speech over the robot: the audio service pauses playback by itself; nothing is decided yet.
    await loop.handle(SpeechStarted(t_ns=now, turn_id="u-3", audio_s=3.0, captured_ns=now - 200_000_000,
                                    during_playback=True))
    await loop.handle(PlaybackPaused(t_ns=now + 1, turn_id="turn-2", onset_captured_ns=now - 280_000_000,
                                     stop_ms=80.0))
    assert speaker.stops == 0 and loop.current_turn == "turn-2"
    # Its transcript has words: barge-in, commanded at once, before the turn's task even unwinds.
    barge = transcript("u-3", "Stop, please stop now.")
    barge.barge_in = True
    await loop.handle(barge)
    assert speaker.stops == 1
    assert loop.current_turn == "u-3"  # the interruption is the next turn
    await until(lambda: loop.turns_done == 1, "the turn record")
    assert closed == [True]  # the LLM stream was closed, not left to the garbage collector
    assert not hold.is_set()
    (rec,) = turn_log.read()
    assert rec["interrupted"] is True and rec["interrupt_reason"] == "new utterance"
    assert rec["pauses"] == [{"onset_captured_ns": now - 280_000_000, "paused_ns": now + 1, "stop_ms": 80.0,
                              "outcome": "barge_in"}]
    assert rec["false_interruptions"] == 0
    assert rec["error"] is None and next(s.text for s in speaker.said) == "Let me tell you a long story."
    assert loop.session.history == []  # an abandoned reply is not remembered
    # The audio service then reports the stop the agent asked for: nothing more happens.
    await loop.handle(Interrupted(t_ns=time.monotonic_ns(), turn_id="turn-2", reason="stop", played_ms=300.0))
    assert speaker.stops == 1 and loop._turns["u-3"].record.barge_in is True


async def test_a_cough_pauses_and_resumes_the_reply_without_cancelling_it(tmp_path: Path) -> None:
    loop, speaker, turn_log = make_loop(tmp_path, scripted("Let me tell you a long story. ", "It was dark."))
    await loop.handle(transcript("turn-c", "Tell me a story"))
    await until(lambda: any(s.final for s in speaker.said), "the whole reply")
    start = time.monotonic_ns()
    await loop.handle(PlaybackStarted(t_ns=start, turn_id="turn-c", first_audio_ms=70.0))
    await loop.handle(PlaybackPaused(t_ns=start + 10, turn_id="turn-c", onset_captured_ns=start, stop_ms=90.0))
    await loop.handle(SpeechEnded(t_ns=start + 20, audio_s=2.0, dropped="too_short"))
    await loop.handle(PlaybackResumed(t_ns=start + 30, turn_id="turn-c", reason="not_speech", paused_ms=400.0))
    # A "mhm" that was transcribed is not a turn and interrupts nothing either.
    await loop.handle(transcript("u-mhm", "Mhm."))
    assert speaker.stops == 0 and loop.current_turn == "turn-c" and loop.ignored == 1
    await loop.handle(PlaybackFinished(t_ns=time.monotonic_ns(), turn_id="turn-c", played_ms=2000.0, final=True))
    await until(lambda: loop.turns_done == 1, "the turn record")
    (rec,) = turn_log.read()
    assert rec["interrupted"] is False and rec["false_interruptions"] == 1
    assert rec["pauses"][0]["outcome"] == "not_speech" and rec["pauses"][0]["paused_ms"] == 400.0
    assert rec["reply"] == "Let me tell you a long story. It was dark."


async def test_a_new_utterance_while_thinking_replaces_the_turn(tmp_path: Path) -> None:
    hold, closed = asyncio.Event(), []
    loop, speaker, turn_log = make_loop(tmp_path, scripted("Hmm", hold=hold, closed=closed))
    await loop.handle(transcript("turn-a", "What is"))
    await until(lambda: loop.current_turn == "turn-a" and "llm_first_token" in loop._turns["turn-a"].record.t_ns,
                "the first token")
    loop._agent = build_agent(AgentSettings(), scripted("Sure."))
    await loop.handle(transcript("turn-b", "What is the time?"))
    assert loop.current_turn == "turn-b"
    assert speaker.stops == 0  # nothing was playing: no stop command needed
    await until(lambda: any(s.final for s in speaker.said), "the second reply")
    await play_out(loop, "turn-b")
    await until(lambda: loop.turns_done == 2, "both records")
    first, second = turn_log.read()
    assert first["turn_id"] == "turn-a" and first["interrupted"] and first["interrupt_reason"] == "new utterance"
    assert second["turn_id"] == "turn-b" and second["reply"] == "Sure." and not second["interrupted"]
    assert closed == [True]


async def test_the_llm_failing_is_apologised_for(tmp_path: Path) -> None:
    # The real OpenAI client, pointed at a port where nothing listens.
    settings = AgentSettings(llm_url=f"http://127.0.0.1:{free_port()}", llm_timeout_s=5)
    loop, speaker, turn_log = make_loop(tmp_path, settings=settings)
    await loop.handle(transcript("turn-3", "Are you there?"))
    await until(lambda: bool(speaker.said), "the apology")
    assert [(s.text, s.final) for s in speaker.said] == [(APOLOGY["en"], True)]
    await play_out(loop, "turn-3")
    await until(lambda: loop.turns_done == 1, "the turn record")
    (rec,) = turn_log.read()
    assert rec["error"].startswith("LLM: ") and "Connection" in rec["error"]
    assert rec["reply"] == APOLOGY["en"] and rec["e2e_ms"] is not None


async def test_an_agent_bug_is_not_blamed_on_the_llm(tmp_path: Path) -> None:
    loop, speaker, turn_log = make_loop(tmp_path, scripted("Hi", raise_=KeyError("oops")))
    await loop.handle(transcript("turn-4", "Hello"))
    await until(lambda: bool(speaker.said), "the apology")
    assert [s.text for s in speaker.said] == [BUG_APOLOGY["en"]]
    await play_out(loop, "turn-4")
    await until(lambda: loop.turns_done == 1, "the turn record")
    (rec,) = turn_log.read()
    assert rec["error"].startswith("agent: KeyError") and "LLM" not in rec["error"]


async def test_audio_away_records_the_error_and_the_next_turn_works(tmp_path: Path) -> None:
    speaker = RecordingSpeaker(fail=True)
    loop, _, turn_log = make_loop(tmp_path, scripted("Fine, thanks. ", "And you?"), speaker=speaker)
    await loop.handle(transcript("turn-5", "How are you?"))
    await until(lambda: loop.turns_done == 1, "the failed turn's record")
    speaker.fail = False
    await loop.handle(transcript("turn-6", "How are you?"))
    await until(lambda: any(s.final for s in speaker.said), "the reply")
    await play_out(loop, "turn-6")
    await until(lambda: loop.turns_done == 2, "the second record")
    failed, ok = turn_log.read()
    assert failed["error"].startswith("audio: ") and "not reachable" in failed["error"]
    assert ok["error"] is None and ok["reply"] == "Fine, thanks. And you?"


async def test_the_end_of_turn_marker_when_the_last_sentence_went_out_early(tmp_path: Path) -> None:
    # A reply with no final punctuation cut at the length limit: the cutter releases everything while
    # streaming, so the loop sends an empty `final` say as the end-of-turn marker.
    settings = AgentSettings(sentence_max_chars=20)
    loop, speaker, _turn_log = make_loop(tmp_path, scripted("aaaa bbbb cccc dddd eeee ffff gggg hhhh "),
                                        settings=settings)
    await loop.handle(transcript("turn-7", "Say letters"))
    await until(lambda: any(s.final for s in speaker.said), "the end marker")
    assert speaker.said[-1].text == "" and speaker.said[-1].final
    assert all(s.text and not s.final for s in speaker.said[:-1])
    await play_out(loop, "turn-7")
    await until(lambda: loop.turns_done == 1, "the turn record")


async def test_sequential_pipeline_says_the_whole_reply_once(tmp_path: Path) -> None:
    settings = AgentSettings(pipeline="sequential")
    loop, speaker, _turn_log = make_loop(tmp_path, scripted("One. ", "Two. ", "Three."), settings=settings)
    await loop.handle(transcript("turn-8", "Count"))
    await until(lambda: bool(speaker.said), "the reply")
    assert [(s.text, s.final, s.sequential) for s in speaker.said] == [("One. Two. Three.", True, True)]
    await play_out(loop, "turn-8")
    await until(lambda: loop.turns_done == 1, "the turn record")
    assert json.loads((tmp_path / "turns.jsonl").read_text())["mode"] == "sequential"


async def test_the_turn_log_write_failing_does_not_end_the_loop(tmp_path: Path) -> None:
    loop, speaker, _ = make_loop(tmp_path, scripted("Ok."))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    loop._log = TurnLog(blocker / "turns.jsonl")  # its folder cannot be made
    await loop.handle(transcript("turn-9", "Hi"))
    await until(lambda: bool(speaker.said), "the reply")
    await play_out(loop, "turn-9")
    await until(lambda: loop.turns_done == 1, "the turn to finish")
    assert loop.current_turn is None


@pytest.mark.parametrize("during_playback", [False, True])
async def test_speech_without_a_turn_commands_nothing(tmp_path: Path, during_playback: bool) -> None:
    loop, speaker, _ = make_loop(tmp_path, scripted("Ok."))
    now = time.monotonic_ns()
    await loop.handle(SpeechStarted(t_ns=now, audio_s=1.0, captured_ns=now, during_playback=during_playback))
    await loop.handle(Transcript(t_ns=now, turn_id="blank", text="  ", t0_ns=now, speech_started_ns=now,
                                 audio_start_s=0.0, audio_end_s=0.1))
    assert speaker.stops == 0 and speaker.said == [] and loop.current_turn is None


# --- preemptive replies ---------------------------------------------------------------------------------


def speculative(turn_id: str, text: str) -> SpeculativeTranscript:
    now = time.monotonic_ns()
    return SpeculativeTranscript(t_ns=now, turn_id=turn_id, text=text, language="en", pause_ns=now - 50_000_000,
                                 speech_end_captured_ns=now - 250_000_000, asr_ms=300.0)


async def test_a_confirmed_preemptive_reply_plays_its_held_audio_at_once(tmp_path: Path) -> None:
    loop, speaker, turn_log = make_loop(tmp_path, scripted("It is noon. ", "Have a nice day."),
                                        settings=AgentSettings(preemptive=True))
    await loop.handle(speculative("u1", "What time is it?"))
    await until(lambda: any(s.final for s in speaker.said), "the held reply")
    assert all(s.hold for s in speaker.said) and speaker.released == []  # synthesised, nothing played
    assert loop.session.history == []  # not remembered before it is confirmed
    final = transcript("u1", "what time is it")  # same words, other case and punctuation
    await loop.handle(final)
    assert speaker.released == ["u1"]
    _, start = await play_out(loop, "u1")
    await until(lambda: loop.turns_done == 1, "the record")
    (rec,) = turn_log.read()
    assert rec["preemptive"] == "hit" and rec["preemptive_misses"] == 0 and not rec["interrupted"]
    assert rec["t_ns"]["speech_end"] == final.t0_ns and rec["e2e_ms"] == round((start - final.t0_ns) / 1e6, 2)
    # The reply was thought out before the end of speech was even declared.
    assert rec["t_ns"]["llm_first_token"] < rec["t_ns"]["asr_done"]
    assert len(loop.session.history) == 2


async def test_speech_resuming_throws_the_preemptive_reply_away(tmp_path: Path) -> None:
    hold, closed = asyncio.Event(), []
    loop, speaker, turn_log = make_loop(tmp_path, scripted("Sure. ", "I can", hold=hold, closed=closed),
                                        settings=AgentSettings(preemptive=True))
    await loop.handle(speculative("u2", "Could you tell me what"))
    await until(lambda: len(speaker.said) == 1, "the first held sentence")
    await loop.handle(SpeechResumed(t_ns=time.monotonic_ns(), turn_id="u2"))
    assert speaker.stops == 1 and loop.current_turn is None  # held audio dropped at once
    await until(lambda: closed == [True], "the LLM stream to close")
    # The stale speculative text of the earlier pause is not used again.
    stale = speculative("u2", "Could you tell me what")
    stale = stale.model_copy(update={"pause_ns": 0})
    await loop.handle(stale)
    assert loop.current_turn is None
    loop._agent = build_agent(AgentSettings(), scripted("It is sunny."))
    await loop.handle(Interrupted(t_ns=time.monotonic_ns(), reason="stop"))  # the echo of that stop
    await loop.handle(transcript("u2", "Could you tell me what the weather is like?"))
    assert loop.current_turn == "u2"
    await until(lambda: any(s.final for s in speaker.said), "the real reply")
    assert not speaker.said[-1].hold
    await play_out(loop, "u2")
    await until(lambda: loop.turns_done == 1, "the record")
    (rec,) = turn_log.read()  # one record for the utterance: the thrown-away reply wrote none
    assert rec["preemptive"] is None and rec["preemptive_misses"] == 1 and rec["reply"] == "It is sunny."
    assert rec["transcript"] == "Could you tell me what the weather is like?" and not rec["interrupted"]
    assert len(loop.session.history) == 2  # only the real turn is remembered


async def test_a_different_final_transcript_replaces_the_preemptive_reply(tmp_path: Path) -> None:
    loop, speaker, turn_log = make_loop(tmp_path, scripted("Okay."), settings=AgentSettings(preemptive=True))
    await loop.handle(speculative("u3", "Turn on the light"))
    await until(lambda: any(s.final for s in speaker.said), "the held reply")
    await loop.handle(transcript("u3", "Turn on the lights in the kitchen"))
    assert speaker.released == [] and speaker.stops == 1
    await until(lambda: len([s for s in speaker.said if s.final]) == 2, "the second reply")
    await play_out(loop, "u3")
    await until(lambda: loop.turns_done == 1, "the record")
    (rec,) = turn_log.read()
    assert rec["preemptive_misses"] == 1 and rec["transcript"] == "Turn on the lights in the kitchen"


async def test_without_the_setting_speculative_transcripts_start_nothing(tmp_path: Path) -> None:
    loop, speaker, _ = make_loop(tmp_path, scripted("Hi."), settings=AgentSettings(preemptive=False))
    await loop.handle(speculative("u4", "Hello"))
    assert loop.current_turn is None and speaker.said == []


# --- being addressed ------------------------------------------------------------------------------------


async def test_name_mode_answers_only_speech_that_names_the_robot_then_follow_ups(tmp_path: Path) -> None:
    settings = AgentSettings(addressing="name", conversation_window_s=30)
    loop, speaker, turn_log = make_loop(tmp_path, scripted("It is noon."), settings)
    seen: list[tuple[str, dict[str, Any]]] = []
    loop._on_event = lambda kind, data: seen.append((kind, data))
    await loop.handle(transcript("u-1", "What time is it?"))
    assert loop.current_turn is None and speaker.said == []
    ignored = [d for k, d in seen if k == "ignored"]
    assert ignored == [{"turn_id": "u-1", "text": "What time is it?", "reason": "not_addressed", "barge_in": False}]
    await loop.handle(transcript("u-2", "Watus, what time is it?"))
    assert loop.current_turn == "u-2"
    await until(lambda: any(s.final for s in speaker.said), "the reply")
    await play_out(loop, "u-2")
    await until(lambda: loop.turns_done == 1, "the first turn")
    await loop.handle(transcript("u-3", "And what day is it?"))  # inside the window: no name needed
    assert loop.current_turn == "u-3"
    await until(lambda: loop.turns_done == 1 and len([s for s in speaker.said if s.final]) == 2, "the follow-up")
    await play_out(loop, "u-3")
    await until(lambda: loop.turns_done == 2, "the follow-up's record")
    recs = turn_log.read()
    assert [r["addressed"] for r in recs] == ["name", "window"]


async def test_name_mode_speech_not_for_the_robot_resumes_a_paused_reply(tmp_path: Path) -> None:
    settings = AgentSettings(addressing="name", conversation_window_s=0)
    loop, speaker, _ = make_loop(tmp_path, scripted("A long story. ", "The end."), settings)
    await loop.handle(transcript("u-1", "Watus, tell me a story."))
    await until(lambda: any(s.final for s in speaker.said), "the reply")
    now = time.monotonic_ns()
    await loop.handle(PlaybackStarted(t_ns=now, turn_id="u-1", first_audio_ms=70.0))
    await loop.handle(PlaybackPaused(t_ns=now + 5, turn_id="u-1", onset_captured_ns=now, stop_ms=70.0))
    await loop.handle(transcript("u-2", "Could you pass me the salt, Anna?"))  # people talking to each other
    assert speaker.resumes == 1 and speaker.stops == 0 and loop.current_turn == "u-1"


async def test_wake_mode_the_wake_word_opens_the_window(tmp_path: Path) -> None:
    settings = AgentSettings(addressing="wake", conversation_window_s=30)
    loop, _speaker, _ = make_loop(tmp_path, scripted("It is noon."), settings)
    await loop.handle(transcript("u-1", "Watus, what time is it?"))  # the name is not the wake word
    assert loop.current_turn is None and loop.ignored == 1
    now = time.monotonic_ns()
    await loop.handle(WakeWord(t_ns=now, model="alexa", phrase="alexa", probability=0.99, captured_ns=now))
    await loop.handle(transcript("u-2", "Alexa."))  # only the wake phrase: not a question
    assert loop.current_turn is None and loop.ignored == 2
    await loop.handle(transcript("u-3", "What time is it?"))
    assert loop.current_turn == "u-3" and loop._turns["u-3"].record.addressed == "wake"


# --------------------------------------------------------------------------- the prompt prefix warm-up


def _prompts_model(calls: list[str], gate: asyncio.Event | None = None, order: list[str] | None = None,
                   closed: list[str] | None = None) -> FunctionModel:
    """A model that records each call's user prompt; a warm-up (no question after the scene line) waits
    for `gate`; `order` learns when each call started and when a warm-up's stream was closed."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        prompt = str(messages[-1].parts[-1].content)  # type: ignore[union-attr]
        warm = prompt.endswith("\n")
        calls.append(prompt)
        if order is not None:
            order.append("warm" if warm else "turn")
        try:
            if warm and gate is not None:
                await gate.wait()
            yield "Fine. "
            yield "Thanks."
        finally:
            if warm and closed is not None:
                closed.append(prompt)
            if warm and order is not None:
                order.append("warm closed")

    return FunctionModel(stream_function=stream)


def _loop_with_vision(tmp_path: Path, model: FunctionModel) -> tuple[VoiceLoop, RecordingSpeaker, TurnLog]:
    from watus.agent.scene import VisionClient

    settings = AgentSettings()
    speaker = RecordingSpeaker()
    turn_log = TurnLog(tmp_path / "turns.jsonl")
    # Nothing listens there: every look is "[Camera: unavailable ...]", a scene line all the same.
    vision = VisionClient(f"http://127.0.0.1:{free_port()}", 2.0, 2000)
    loop = VoiceLoop(settings, build_agent(settings, model), Session("s", 3), vision, speaker, turn_log)
    return loop, speaker, turn_log


def _speech_started(turn_id: str) -> SpeechStarted:
    now = time.monotonic_ns()
    return SpeechStarted(t_ns=now, turn_id=turn_id, audio_s=1.0, captured_ns=now)


async def test_speech_start_prefills_the_prompt_up_to_the_question_and_the_turn_shares_it(tmp_path: Path) -> None:
    calls: list[str] = []
    closed: list[str] = []
    loop, speaker, turn_log = _loop_with_vision(tmp_path, _prompts_model(calls, closed=closed))
    await loop.handle(_speech_started("u-1"))
    await until(lambda: len(closed) == 1, "the warm-up's stream closed at its first token")
    (warm,) = calls
    assert warm.startswith("[Camera: unavailable") and warm.endswith("]\n"), warm
    assert loop.session.history == []  # a warm-up is never remembered
    await loop.handle(transcript("u-1", "What do you see?"))
    await until(lambda: any(s.final for s in speaker.said), "the reply")
    assert calls[1] == warm + "What do you see?"  # the same prompt, the question after the warmed part
    await play_out(loop, "u-1")
    await until(lambda: loop.turns_done == 1, "the turn record")
    (rec,) = turn_log.read()
    assert rec["warm_prefix_ms"] is not None and rec["warm_prefix_ms"] >= 0
    assert len(loop.session.history) == 2


async def test_a_turn_waits_for_the_warm_up_under_way_and_none_starts_while_the_robot_replies(
        tmp_path: Path) -> None:
    calls: list[str] = []
    order: list[str] = []
    gate = asyncio.Event()
    loop, speaker, _ = _loop_with_vision(tmp_path, _prompts_model(calls, gate=gate, order=order))
    await loop.handle(_speech_started("u-2"))
    await until(lambda: order == ["warm"], "the warm-up's request")
    await loop.handle(transcript("u-2", "How are you?"))
    await asyncio.sleep(0.2)
    assert order == ["warm"]  # the turn's request waits: on the server it would take a slot without the cache
    gate.set()
    await until(lambda: "turn" in order, "the turn's request")
    assert order[:3] == ["warm", "warm closed", "turn"], order
    await until(lambda: any(s.final for s in speaker.said), "the reply")
    # Speech while the robot is still replying: the memory is about to change, no warm-up.
    await loop.handle(_speech_started("u-3"))
    await asyncio.sleep(0.2)
    assert order.count("warm") == 1, order
