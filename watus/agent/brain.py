"""The robot's brain: a pydantic-ai Agent over the LLM server, with the scene and conversation memory.

The persona (robot name, language) is the agent's fixed instructions, and the tools are fixed too, so
the start of every prompt is the same and the LLM server reuses its cached prefill. What changes every
turn, the scene summary, goes into the user message just before the question. Tools let a model that
can call them look again or count and describe; a model that cannot (the 135M CPU default) still gets
the scene in its context. Replies stream as text deltas with no debouncing: the first sentence is on
its way to the speaker while the model is still writing the second.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings

from watus.agent.repeats import RepeatGuard
from watus.agent.scene import SceneView, VisionClient, count_label, describe_person, summarize
from watus.agent.settings import AgentSettings
from watus.core.config import reveal

log = logging.getLogger(__name__)

#: Measured on the CPU default (SmolLM2-135M, 2026-12-04): 8 questions on three scenes (a bus with four
#: people, a room, the camera down), 4 samples each. An earlier persona that told the model what to say
#: when the camera is unavailable had it say so with the camera up (9 of 32 answers used the scene); this
#: one, 24 of 32, and nearly as many answers admitted the camera was down (11 of 16, against 13). It also
#: names the robot: the model said its own name in 7 of 12 answers, against 0. And it is shorter.
PERSONAS = {
    "en": ("You are a friendly robot with a camera, and your name is {name}. Answer in one or two short spoken "
           "sentences, without lists. The line in square brackets before each message says what your camera "
           "sees right now; never say more than it says."),
    "pl": ("Jesteś przyjaznym robotem z kamerą i nazywasz się {name}. Odpowiadaj po polsku, jednym lub dwoma "
           "krótkimi zdaniami do wypowiedzenia, bez list. Linia w nawiasach kwadratowych przed każdą wiadomością "
           "mówi, co twoja kamera widzi teraz; nigdy nie mów więcej, niż ona mówi."),
}


@dataclass
class TurnDeps:
    """What tools of one turn may use."""

    vision: VisionClient | None
    view: SceneView | None
    language: str
    turn_id: str | None = None
    looks: list[SceneView] = field(default_factory=list)


def persona(settings: AgentSettings) -> str:
    template = settings.persona or PERSONAS[settings.language.value]
    return template.format(name=settings.robot_name)


def build_model(settings: AgentSettings) -> Model:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    # The openai client needs some key; a server that asks for none ignores it.
    provider = OpenAIProvider(base_url=settings.llm_url.rstrip("/") + "/v1",
                              api_key=reveal(settings.llm_api_key) or "none")
    return OpenAIChatModel(settings.llm_model, provider=provider)


def build_agent(settings: AgentSettings, model: Model | None = None) -> Agent[TurnDeps, str]:
    agent: Agent[TurnDeps, str] = Agent(
        model or build_model(settings),
        deps_type=TurnDeps,
        output_type=str,
        instructions=persona(settings),
        model_settings=ModelSettings(max_tokens=settings.max_tokens, temperature=settings.temperature,
                                     frequency_penalty=settings.frequency_penalty, timeout=settings.llm_timeout_s),
    )

    if not settings.tools:
        return agent

    @agent.tool
    async def look_again(ctx: RunContext[TurnDeps]) -> str:
        """Take a fresh look through the camera now and describe what is visible."""
        if ctx.deps.vision is None:
            return "The camera is not available."
        view = await ctx.deps.vision.look(ctx.deps.turn_id)
        ctx.deps.view = view
        ctx.deps.looks.append(view)
        return summarize(view, ctx.deps.language)

    @agent.tool
    async def count_objects(ctx: RunContext[TurnDeps], label: str) -> str:
        """Count the visible objects of one kind, e.g. "person", "chair", "cup"."""
        view = ctx.deps.view
        n = count_label(view, label) if view is not None else None
        return "The camera is not available." if n is None else f"{n} {label}"

    @agent.tool
    async def describe_a_person(ctx: RunContext[TurnDeps], number: int) -> str:
        """Describe the person the camera line calls `person <number>` (e.g. 3 for "person 3"): age, gender,
        emotion."""
        view = ctx.deps.view
        text = describe_person(view, number, ctx.deps.language) if view is not None else None
        return text or f"There is no person number {number} in view."

    return agent


class Session:
    """Conversation memory: the messages of at most the last `max_turns` turns.

    When it is full the older half goes at once, not one turn per turn: a history that slides by a turn
    changes from its first message on every turn, so the LLM server re-evaluates all of it (its cached
    prompt prefix ends at the system prompt); dropped in halves, the prefix stays valid for
    `max_turns // 2` turns between drops and only the new turn's tokens are prefilled.
    """

    def __init__(self, session_id: str, max_turns: int) -> None:
        self.id = session_id
        self._max = max_turns
        self._turns: list[list[ModelMessage]] = []

    @property
    def history(self) -> list[ModelMessage]:
        return [m for turn in self._turns for m in turn] if self._max else []

    def add_turn(self, messages: list[ModelMessage]) -> None:
        self._turns.append(messages)
        if len(self._turns) > self._max:
            del self._turns[: len(self._turns) - self._max // 2]

    def clear(self) -> None:
        self._turns.clear()


def user_prompt(question: str, view: SceneView | None, language: str) -> str:
    if view is None:
        return question
    return f"{summarize(view, language)}\n{question}"


async def stream_reply(agent: Agent[TurnDeps, str], session: Session, question: str, deps: TurnDeps,
                       max_chars: int, remember: Callable[[list[ModelMessage]], None] | None = None,
                       ) -> AsyncGenerator[str, None]:
    """Text deltas of the reply, cut at `max_chars`; memory is updated when the reply completes.

    Closing the iterator early (barge-in) cancels the LLM request and leaves the turn out of memory.
    `remember` replaces the memory update (a preemptive reply is remembered only once confirmed).
    A reply that starts to say a clause again (`repeats.RepeatGuard`) ends before it: the LLM request
    is cancelled and the reply is remembered as said, without the loop.
    """
    prompt = user_prompt(question, deps.view, deps.language)
    sent = 0
    guard = RepeatGuard()
    async with agent.run_stream(prompt, message_history=session.history, deps=deps) as run:
        async for raw in run.stream_text(delta=True, debounce_by=None):
            delta = guard.feed(raw)
            if sent + len(delta) >= max_chars:
                yield delta[: max(0, max_chars - sent)]
                log.warning("reply cut at %d characters", max_chars)
                return
            sent += len(delta)
            if delta:
                yield delta
            if guard.looped:
                log.warning("reply stopped where it began to repeat itself (after %d characters)", sent)
                await run.cancel()
                break
        else:
            if rest := guard.flush():
                yield rest
        messages = run.new_messages()
        if guard.looped:
            messages = said_only(messages, guard.text)
        (remember or session.add_turn)(messages)


def said_only(messages: list[ModelMessage], said: str) -> list[ModelMessage]:
    """The turn's messages with the last response's text replaced by what was said (a loop cut off)."""
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if isinstance(msg, ModelResponse):
            parts = [p for p in msg.parts if not isinstance(p, TextPart)]
            return [*messages[:i], replace(msg, parts=[*parts, TextPart(said.strip())]), *messages[i + 1:]]
    return messages


async def warm_prefix(agent: Agent[TurnDeps, str], session: Session, view: SceneView | None,
                      language: str) -> None:
    """Have the LLM server prefill the next turn's prompt up to where the question will go.

    The request is the one `stream_reply` will send, through the same agent (so the same persona, tools
    and memory, rendered the same), with the scene line and no question; it is closed at its first
    token, when the prefill is done. The server keeps that prompt in its cache, and the turn's own
    request then prefills only what differs: the question's tokens (and the scene line, if the scene
    changed meanwhile). Prompt tokens cost ~6 ms each on 2 CPU cores, the warmed part is ~60 per turn.
    Never remembered; raises what the LLM raises.
    """
    deps = TurnDeps(vision=None, view=view, language=language)
    async with agent.run_stream(user_prompt("", view, language), message_history=session.history,
                                deps=deps) as run:
        async for _ in run.stream_text(delta=True, debounce_by=None):
            return


def scene_json(view: SceneView | None) -> dict[str, Any] | None:
    """The part of a scene worth keeping in the turn log."""
    if view is None:
        return None
    if view.scene is None:
        return {"error": view.error}
    s = view.scene
    return {"frame_id": s.frame_id, "age_ms": view.age_ms, "stale": view.stale, "people": len(s.people),
            "objects": len(s.objects)}
