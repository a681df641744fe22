"""A reply that loops is stopped before it says a clause again (`watus.agent.repeats`), and is remembered
as said."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from watus.agent.brain import Session, TurnDeps, build_agent, stream_reply
from watus.agent.repeats import RepeatGuard, normalise
from watus.agent.settings import AgentSettings

#: The CPU default's answer to every question of a benchmark run (2026-12-04), as it streamed.
LOOP = ("I'm not here. I'm not here. I'm not here. I'm not here. I'm not here. I'm not here, and that's all you "
        "can do for me, and that's all you can do for me, and that's all you can do for me.")
CLEAN = [
    "I see four people and a bus. The bus is red, and it is parked on the street.",
    "No, no, no. That is not a cat, it is a dog.",  # short units may repeat
    "Hello! I'm Watus, a robot. I can see you, and I can hear you.",
    "It costs 3.5 dollars: 3.5 is the price.",  # "3" and "5 dollars" are units too short to count
    "Sure,\nI can help. Sure, I can help you with that.",  # same start, different units
]


def _chunks(text: str, rng: random.Random) -> list[str]:
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 6)
        out.append(text[i:i + n])
        i += n
    return out


def _run(guard: RepeatGuard, chunks: list[str]) -> tuple[str, list[str]]:
    outs = [guard.feed(c) for c in chunks]
    return "".join(outs) + guard.flush(), outs


def test_normalise_keeps_only_the_words() -> None:
    assert normalise("  I’m NOT here... ") == normalise("i'm not here") == "i'm not here"


@pytest.mark.parametrize("seed", range(5))
def test_a_loop_is_cut_before_its_first_repeat_in_any_chunking(seed: int) -> None:
    guard = RepeatGuard()
    said, _ = _run(guard, _chunks(LOOP, random.Random(seed)))
    assert said == "I'm not here."
    assert guard.looped and guard.text == said


def test_a_clause_said_again_ends_the_reply() -> None:
    guard = RepeatGuard()
    said, _ = _run(guard, _chunks("I'm here, and that's all you can do for me, and that's all you can do for me, "
                                  "and that's all", random.Random(1)))
    assert said == "I'm here, and that's all you can do for me,"
    assert guard.looped


def test_a_repeat_cut_short_by_the_end_of_the_reply_is_not_said() -> None:
    guard = RepeatGuard()
    said, _ = _run(guard, ["I'm a robot! I'm a", " robot"])
    assert said == "I'm a robot!" and guard.looped


@pytest.mark.parametrize("text", CLEAN)
def test_a_reply_without_loops_comes_through_unchanged(text: str) -> None:
    for seed in range(3):
        guard = RepeatGuard()
        said, _ = _run(guard, _chunks(text, random.Random(seed)))
        assert said == text and not guard.looped


def test_text_is_held_back_only_while_it_could_become_a_repeat() -> None:
    guard = RepeatGuard()
    assert guard.feed("I see a bus. It is") == "I see a bus. It is"  # "It is" starts no earlier unit
    assert guard.feed(" red. I see") == " red."  # "I see" might be "I see a bus" again: held
    assert guard.feed(" a") == ""
    assert guard.feed(" dog") == " I see a dog"  # it diverged: out at once
    assert guard.feed(".") == "." and guard.flush() == "" and not guard.looped


async def test_a_looping_stream_is_stopped_and_remembered_as_said() -> None:
    """Through the real agent: the stream is left before its end (the LLM request is closed), the speaker
    gets the reply without the loop, and so does the memory, so the next prompt does not teach the loop."""
    pulled: list[str] = []
    prompts: list[list[str]] = []

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        prompts.append([str(getattr(p, "content", "")) for m in messages for p in m.parts])
        for piece in _chunks(LOOP if len(prompts) == 1 else "Yes.", random.Random(3)):
            pulled.append(piece)
            yield piece

    agent = build_agent(AgentSettings(), FunctionModel(stream_function=stream))
    session = Session("s", 4)
    deps = TurnDeps(vision=None, view=None, language="en")
    said = "".join([d async for d in stream_reply(agent, session, "Are you there?", deps, 600)])
    assert said == "I'm not here."
    assert len("".join(pulled)) < len("I'm not here. I'm not here. I'm not here.")  # stopped, not drained
    responses = [m for m in session.history if isinstance(m, ModelResponse)]
    assert [[p.content for p in r.parts if isinstance(p, TextPart)] for r in responses] == [["I'm not here."]]
    assert "".join([d async for d in stream_reply(agent, session, "Sure?", deps, 600)]) == "Yes."
    assert "I'm not here." in prompts[1] and not any("I'm not here. I'm" in p for p in prompts[1])
