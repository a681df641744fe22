"""The agent's pure logic: sentence cutting, scene context, the turn log, memory and tool paths."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.models.test import TestModel

from watus.agent.brain import Session, TurnDeps, build_agent, persona, stream_reply, user_prompt
from watus.agent.scene import SceneView, count_label, describe_person, osoby, parse_scene, summarize, view_of
from watus.agent.settings import AgentSettings, Language
from watus.agent.turnlog import TurnLog, TurnRecord
from watus.core.sentences import SentenceCutter
from watus.core.wire import WireError


def _cut(text: str, step: int = 1, max_chars: int = 160) -> list[str]:
    cutter = SentenceCutter(max_chars)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += cutter.feed(text[i:i + step])
    return out + cutter.flush()


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello there! I see two people. One is happy.", ["Hello there!", "I see two people.", "One is happy."]),
    ("Dr. Smith left at 3.30 p.m. yesterday. Then what?", ["Dr. Smith left at 3.30 p.m. yesterday.", "Then what?"]),
    ("Widzę np. dwie osoby itd. oraz psa. To wszystko.", ["Widzę np. dwie osoby itd. oraz psa.", "To wszystko."]),
    ('He said "Stop!" Then he left.', ['He said "Stop!"', "Then he left."]),
    ("J. R. R. Tolkien wrote books. Yes.", ["J. R. R. Tolkien wrote books.", "Yes."]),
    ("The value is 3.14 today… Great", ["The value is 3.14 today…", "Great"]),
    ("Steps:\n1. Look around\n2. Wave", ["Steps:", "1. Look around", "2. Wave"]),
    ("I see a cat. it is small.", ["I see a cat. it is small."]),  # lower case after the dot: no cut
])
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_sentences(text: str, expected: list[str], step: int) -> None:
    assert _cut(text, step) == expected


def test_first_sentence_is_released_before_the_reply_ends() -> None:
    cutter = SentenceCutter()
    assert cutter.feed("I see two people") == []
    assert cutter.feed(". One") == ["I see two people."]


def test_a_long_first_sentence_s_first_clause_goes_out_as_soon_as_the_speaker_would_split_it() -> None:
    from watus.core.sentences import split_first_clause

    text = "I can see four people standing near the bus, and two of them are smiling at me. The bus is red."
    cutter = SentenceCutter(first_clause=True)
    first: list[str] = []
    at = 0
    while not first:
        first = cutter.feed(text[at:at + 2])
        at += 2
    assert first == ["I can see four people standing near the bus,"]
    assert at < text.index(" me."), at  # before the sentence ended
    assert split_first_clause(text.split(". ")[0] + ".")[0] == first[0]  # where the speaker splits it too
    rest = cutter.feed(text[at:]) + cutter.flush()
    assert rest == ["and two of them are smiling at me.", "The bus is red."]
    # Short first sentences, later sentences and the default cutter are cut at sentence ends only.
    assert _cut("Yes, I can see you now. Well, that is a long second sentence, with a comma in it.") == [
        "Yes, I can see you now.", "Well, that is a long second sentence, with a comma in it."]
    short = SentenceCutter(first_clause=True)
    assert short.feed("Hello there, I am Watus. ") + short.flush() == ["Hello there, I am Watus."]


def test_text_without_punctuation_is_cut_at_the_limit() -> None:
    text = "word " * 100
    parts = _cut(text, step=2, max_chars=60)
    assert all(len(p) <= 60 for p in parts)
    assert " ".join(parts).split() == text.split()
    assert len(_cut("a, b c d e f g h i j k l m n o p q r s t u v w x y z " * 3, 1, 40)[0]) <= 40


_BOX = {"x1": 0.1, "y1": 0.1, "x2": 0.4, "y2": 0.9}


def _obj(label: str, class_id: int) -> dict[str, Any]:
    return {"label": label, "class_id": class_id, "confidence": 0.8, "box": _BOX}


#: A scene as the vision service sends it (validated against the contract, `watus.core.wire.scene.Scene`).
SCENE: dict[str, Any] = {
    "frame_id": 7, "seq": 7, "source": "test", "width": 640, "height": 480, "captured_ns": 0, "result_ns": 0,
    "captured_unix": 0.0, "fps": 10.0,
    "timings": {"capture_wait_ms": 1, "preprocess_ms": 1, "inference_ms": 20, "postprocess_ms": 1, "total_ms": 23},
    "people": [
        {"track_id": 3, "confidence": 0.9, "box": _BOX, "age": {"years": 33.6, "confidence": 0.4},
         "gender": {"label": "male", "confidence": 0.9}, "emotion": {"label": "Happy", "confidence": 0.8}},
        {"track_id": 5, "confidence": 0.8, "box": _BOX, "age": {"years": 8.2, "confidence": 0.5},
         "gender": {"label": "female", "confidence": 0.5}, "emotion": None},
    ],
    "objects": [_obj("person", 0), _obj("person", 0), _obj("bus", 5), _obj("chair", 56), _obj("chair", 56)],
}


def _view(age_ms: float = 300, scene: dict[str, Any] | None = None) -> SceneView:
    now = time.monotonic_ns()
    return view_of(parse_scene({**(scene or SCENE), "captured_ns": now - int(age_ms * 1e6)}), now, 2000)


def test_a_scene_that_breaks_the_contract_is_an_error_not_a_default() -> None:
    broken = {k: v for k, v in SCENE.items() if k != "captured_ns"}
    with pytest.raises(WireError, match="captured_ns") as e:
        parse_scene(broken)
    assert e.value.kind == "scene"
    with pytest.raises(WireError, match="people"):
        parse_scene({**SCENE, "people": [{"track_id": 1}]})


def test_scene_summary_is_compact_and_honest() -> None:
    text = summarize(_view())
    assert text.startswith("[Camera: 2 people")
    assert summarize(_view(age_ms=900)) == text  # the same scene, the same line: the warmed prompt holds
    assert "person 3 (~34 y, male, happy)" in text
    assert "person 5 (~8 y)" in text  # gender at 0.5 is not stated as fact
    assert "2 chair" in text and "bus" in text and "person" not in text.split("Objects:")[1]
    stale = summarize(_view(age_ms=5000))
    assert "5.0 s old" in stale and "Do not describe" in stale
    down = summarize(SceneView(None, "vision service not reachable (ConnectError)", time.monotonic_ns()))
    assert "unavailable" in down and "ConnectError" in down
    polish = summarize(_view(), "pl")
    assert polish.startswith("[Kamera: 2 osoby: osoba 3 (~34 lat, mężczyzna, radość)"), polish


@pytest.mark.parametrize(("n", "word"), [(1, "osoba"), (2, "osoby"), (4, "osoby"), (5, "osób"), (11, "osób"),
                                         (12, "osób"), (14, "osób"), (21, "osób"), (22, "osoby"), (104, "osoby"),
                                         (112, "osób")])
def test_polish_people_count_agrees_with_its_number(n: int, word: str) -> None:
    assert osoby(n) == word


def test_scene_tools_helpers() -> None:
    view = _view()
    assert count_label(view, "people") == 2 and count_label(view, "chairs") == 2 and count_label(view, "dog") == 0
    # The number is the one the camera line shows ("person 3"), not a position in the list.
    assert describe_person(view, 3) == "person 3 (~34 y, male, happy)"
    assert describe_person(view, 5) == "person 5 (~8 y)"
    assert describe_person(view, 1) is None and describe_person(view, 2) is None
    # Without track ids (one picture), the line says only "person": then the number is the position.
    anon = _view(scene={**SCENE, "people": [{**p, "track_id": None} for p in SCENE["people"]]})
    assert describe_person(anon, 2) == "person (~8 y)" and describe_person(anon, 3) is None
    assert count_label(_view(age_ms=9000), "chair") is None


def test_turn_log_lines_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    turn_log = TurnLog(path, max_bytes=600, backups=2)
    t0 = time.monotonic_ns()
    rec = TurnRecord(turn_id="t1", session_id="s", transcript="What do you see?", reply="A bus.")
    for i, stage in enumerate(("speech_end", "asr_done", "scene_fetched", "llm_first_token", "first_sentence",
                               "tts_first_audio", "playback_start", "playback_end")):
        rec.mark(stage, t0 + i * 10_000_000)
    turn_log.write(rec)
    (line,) = turn_log.read()
    assert line["e2e_ms"] == 60.0
    assert line["stages_ms"]["asr_done_ms"] == 10.0 and line["stages_ms"]["playback_end_step_ms"] == 10.0
    for i in range(6):
        turn_log.write({"turn_id": f"x{i}", "pad": "y" * 200})
    assert path.with_name("turns.jsonl.1").exists() and path.with_name("turns.jsonl.2").exists()
    assert not path.with_name("turns.jsonl.3").exists()
    for f in (path, path.with_name("turns.jsonl.1")):
        assert all(json.loads(x) for x in f.read_text().splitlines())
        assert f.stat().st_size <= 600


def test_persona_language_and_prompt() -> None:
    assert "your name is Watus" in persona(AgentSettings()) and "camera" in persona(AgentSettings())
    pl = AgentSettings(language=Language.pl, robot_name="Bolek")
    assert "Bolek" in persona(pl) and "po polsku" in persona(pl)
    assert user_prompt("Hi", None, "en") == "Hi"
    assert user_prompt("Hi", _view(), "en").endswith("]\nHi")


async def _collect(agent: Agent[TurnDeps, str], session: Session, q: str, deps: TurnDeps, limit: int = 600) -> str:
    return "".join([d async for d in stream_reply(agent, session, q, deps, limit)])


async def test_memory_keeps_last_turns() -> None:
    seen: list[int] = []

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(len(messages))
        return ModelResponse(parts=[TextPart("Okay.")])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        seen.append(len(messages))
        yield "Okay."

    agent = build_agent(AgentSettings(), FunctionModel(reply, stream_function=stream))
    session = Session("s", max_turns=2)
    deps = TurnDeps(vision=None, view=None, language="en")
    for _ in range(4):
        assert await _collect(agent, session, "Hello", deps) == "Okay."
    # Each turn is a request and a response; at most 2 past turns (4 messages) are sent, and when a third
    # would be kept the older half goes (one turn left).
    assert seen == [1, 3, 5, 3]
    session.clear()
    await _collect(agent, session, "Hello", deps)
    assert seen[-1] == 1


async def test_memory_keeps_the_prompt_prefix_between_drops() -> None:
    """What the LLM server can reuse: each request starts with the previous one (plus its answer), except
    right after the memory dropped its older half; sliding one turn at a time would break it every turn."""
    sent: list[list[str]] = []

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        sent.append([str(getattr(part, "content", "")) for m in messages for part in m.parts])
        yield f"Answer {len(sent)}."

    agent = build_agent(AgentSettings(), FunctionModel(stream_function=stream))
    session = Session("s", max_turns=6)
    deps = TurnDeps(vision=None, view=None, language="en")
    for i in range(12):
        await _collect(agent, session, f"Question {i}", deps)
    kept = [sum(1 for p in req if p.startswith("Question")) - 1 for req in sent]  # past turns in each request
    assert kept == [0, 1, 2, 3, 4, 5, 6, 3, 4, 5, 6, 3]
    broken = [i for i in range(1, len(sent)) if sent[i][:len(sent[i - 1])] != sent[i - 1]]
    assert broken == [7, 11]  # the prefix was reused by 9 of 11 follow-up requests


async def test_tool_path_counts_from_the_scene() -> None:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        returns = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
        if not returns:
            yield {0: DeltaToolCall(name="count_objects", json_args='{"label": "chair"}')}
        else:
            yield f"I count {returns[0].content}."

    agent = build_agent(AgentSettings(tools=True), FunctionModel(stream_function=stream))
    deps = TurnDeps(vision=None, view=_view(), language="en")
    session = Session("s", 3)
    assert await _collect(agent, session, "How many chairs?", deps) == "I count 2 chair."
    calls = [p for m in session.history for p in getattr(m, "parts", []) if isinstance(p, ToolCallPart)]
    assert [c.tool_name for c in calls] == ["count_objects"]


async def test_tools_are_offered_only_when_enabled() -> None:
    offered: list[list[str]] = []

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        offered.append(sorted(t.name for t in info.function_tools))
        yield "Hi."

    for tools in (False, True):
        agent = build_agent(AgentSettings(tools=tools), FunctionModel(stream_function=stream))
        await _collect(agent, Session("s", 1), "Hi", TurnDeps(vision=None, view=None, language="en"))
    assert offered == [[], ["count_objects", "describe_a_person", "look_again"]]


async def test_reply_is_cut_at_the_limit_and_not_remembered() -> None:
    agent = build_agent(AgentSettings(), TestModel(custom_output_text="blah " * 200))
    session = Session("s", 3)
    text = await _collect(agent, session, "Talk", TurnDeps(vision=None, view=None, language="en"), limit=50)
    assert len(text) == 50
    assert session.history == []
