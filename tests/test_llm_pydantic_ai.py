"""A real pydantic-ai Agent (OpenAIChatModel + OpenAIProvider) against `python -m trt_server`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

pytest.importorskip("pydantic_ai", reason="pydantic-ai is in the `agent` extra")

from pydantic_ai import Agent, RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings


def _model(url: str, model_id: str) -> OpenAIChatModel:
    return OpenAIChatModel(model_id, provider=OpenAIProvider(base_url=url + "/v1", api_key="unused"))


SETTINGS = ModelSettings(temperature=0.0, max_tokens=48)


async def test_plain_run(llm_url: str, model_id: str) -> None:
    agent = Agent(_model(llm_url, model_id), instructions="You are Watus, a friendly robot.",
                  model_settings=SETTINGS)
    result = await agent.run("Say hello to Ana.")
    assert isinstance(result.output, str) and result.output.strip()
    usage = result.usage
    assert usage.input_tokens > 10 and 0 < usage.output_tokens <= 48


async def test_streamed_run(llm_url: str, model_id: str) -> None:
    agent = Agent(_model(llm_url, model_id), model_settings=SETTINGS)
    pieces: list[str] = []
    async with agent.run_stream("Describe a robot in one sentence.") as run:
        async for delta in run.stream_text(delta=True):
            pieces.append(delta)
    assert len(pieces) > 1, "the reply should arrive in several pieces"
    assert "".join(pieces).strip()


@dataclass
class _ForceToolFirst(AbstractCapability[Any]):
    """Forces a call of `tool` on the first step only (SmolLM2 never calls tools by itself)."""

    tool: str

    def get_model_settings(self) -> Any:
        def settings(ctx: RunContext[Any]) -> ModelSettings:
            return ModelSettings(tool_choice=[self.tool]) if ctx.run_step <= 1 else ModelSettings()

        return settings


async def test_agent_calls_a_tool(llm_url: str, model_id: str) -> None:
    calls: list[str] = []
    agent = Agent(_model(llm_url, model_id), model_settings=SETTINGS,
                  capabilities=[_ForceToolFirst("count_people")])

    @agent.tool_plain
    def count_people(label: str) -> int:
        """Count the objects of a kind the robot's camera sees now."""
        calls.append(label)
        return 3

    result = await agent.run("How many people do you see?")
    assert len(calls) == 1 and isinstance(calls[0], str)
    tool_returns = [p for m in result.all_messages() for p in getattr(m, "parts", [])
                    if getattr(p, "part_kind", "") == "tool-return"]
    assert tool_returns and tool_returns[0].content == 3
    assert isinstance(result.output, str)


class Person(BaseModel):
    name: str
    age: int


async def test_structured_output_validates(llm_url: str, model_id: str) -> None:
    agent = Agent(_model(llm_url, model_id), output_type=Person, model_settings=SETTINGS)
    result = await agent.run("Invent a person: a name and an age.")
    assert isinstance(result.output, Person)
    assert result.output.name and isinstance(result.output.age, int)


@dataclass
class _ToolThenOutput(AbstractCapability[Any]):
    """Forces `tool` on the first step, then the output tool (SmolLM2 would call `tool` again and again)."""

    tool: str

    def get_model_settings(self) -> Any:
        def settings(ctx: RunContext[Any]) -> ModelSettings:
            return ModelSettings(tool_choice=[self.tool] if ctx.run_step <= 1 else ["final_result"])

        return settings


class Place(BaseModel):
    city: str
    country: str


class Trip(BaseModel):
    """A trip: its destination is a nested model, so the output schema refers to it through `$defs`."""

    destination: Place
    days: int


class Forecast(BaseModel):
    unit: str
    days: int


async def test_nested_models_as_output_and_tool_arguments(llm_url: str, model_id: str) -> None:
    """pydantic-ai sends nested models as `$ref`s into `$defs`; both the tool and the output are forced calls."""
    assert "$defs" in Trip.model_json_schema()
    seen: list[tuple[Place, Forecast]] = []
    agent = Agent(_model(llm_url, model_id), output_type=Trip, capabilities=[_ToolThenOutput("weather_at")],
                  model_settings=ModelSettings(temperature=0.0, max_tokens=120))

    @agent.tool_plain
    def weather_at(place: Place, forecast: Forecast) -> str:
        """The weather forecast for a place."""
        seen.append((place, forecast))
        return "sunny"

    result = await agent.run("Plan a trip to Paris, France for 3 days; check the weather first.")
    assert len(seen) == 1 and isinstance(seen[0][0], Place) and isinstance(seen[0][1], Forecast)
    assert isinstance(result.output, Trip) and isinstance(result.output.destination, Place)
    assert isinstance(result.output.days, int)


async def test_nested_output_model_streamed(llm_url: str, model_id: str) -> None:
    """The output tool alone (tool_choice `required`, the schema's `$defs` inside the call), streamed."""
    agent = Agent(_model(llm_url, model_id), output_type=Trip,
                  model_settings=ModelSettings(temperature=0.0, max_tokens=120))
    async with agent.run_stream("Plan a trip to Rome, Italy for 2 days.") as run:
        output = await run.get_output()
    assert isinstance(output, Trip) and isinstance(output.destination, Place) and output.destination.city
