"""The real `openai` SDK, sync and async, against `python -m trt_server` on the default model."""

from __future__ import annotations

import httpx
import openai
import pytest

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def client(llm_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def aclient(llm_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=llm_url + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client: openai.OpenAI, model_id: str) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [model_id]
    assert model_id.startswith("SmolLM2-135M-Instruct")


def test_chat_non_streaming_answers_with_real_usage(client: openai.OpenAI, model_id: str) -> None:
    r = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12, temperature=0,
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    # The rendered template (system prompt + markers + question) is well over 20 tokens.
    assert r.usage.prompt_tokens > 20
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_ends_with_usage_chunk(client: openai.OpenAI, model_id: str) -> None:
    stream = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Tell me about robots."}],
        max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.strip()
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16


def test_temperature_zero_is_deterministic_and_seed_reproduces(client: openai.OpenAI, model_id: str) -> None:
    def ask(**kw: object) -> str:
        r = client.chat.completions.create(model=model_id, max_tokens=10,
                                           messages=[{"role": "user", "content": "Name a colour."}], **kw)
        return r.choices[0].message.content or ""

    assert ask(temperature=0) == ask(temperature=0)
    assert ask(temperature=1.0, seed=7) == ask(temperature=1.0, seed=7)


def test_stop_string_cuts_the_output(client: openai.OpenAI, model_id: str) -> None:
    base = client.completions.create(model=model_id, prompt="1, 2, 3, 4, 5,", max_tokens=12, temperature=0)
    full = base.choices[0].text
    assert " 7" in full, full  # the model counts on
    cut = client.completions.create(model=model_id, prompt="1, 2, 3, 4, 5,", max_tokens=12, temperature=0,
                                    stop=[" 7"])
    assert cut.choices[0].text == full[: full.index(" 7")]
    assert cut.choices[0].finish_reason == "stop"


def test_completions_streaming_and_token_prompt(client: openai.OpenAI, model_id: str, llm_url: str) -> None:
    stream = client.completions.create(model=model_id, prompt="Once upon a time", max_tokens=8,
                                       temperature=0, stream=True, stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    # A prompt given as token ids is counted as exactly those tokens.
    r = client.completions.create(model=model_id, prompt=[504, 3575, 282, 4649, 314], max_tokens=3,
                                  temperature=0, extra_body={"ignore_eos": True})
    assert r.usage is not None and r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 3
    echoed = client.completions.create(model=model_id, prompt="Hello", max_tokens=2, echo=True, temperature=0)
    assert echoed.choices[0].text.startswith("Hello")


def test_forced_tool_call_is_valid_json(client: openai.OpenAI, model_id: str) -> None:
    r = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL], tool_choice="required", temperature=0, max_tokens=60,  # type: ignore[list-item]
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls and msg.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    import json

    args = json.loads(msg.tool_calls[0].function.arguments)  # type: ignore[union-attr]
    assert set(args) == {"city"} and isinstance(args["city"], str)


def test_named_tool_choice_streams_tool_call_deltas(client: openai.OpenAI, model_id: str) -> None:
    other = {"type": "function", "function": {"name": "wave", "parameters": {"type": "object", "properties": {}}}}
    stream = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Weather in Warsaw please"}],
        tools=[other, WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},  # type: ignore[list-item]
        temperature=0, max_tokens=60, stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for c in stream:
        if not c.choices:
            continue
        for d in c.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"name": "", "arguments": "", "id": ""})
            entry["id"] += d.id or ""
            entry["name"] += (d.function.name or "") if d.function else ""
            entry["arguments"] += (d.function.arguments or "") if d.function else ""
        finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")


def test_tool_conversation_round_trip(client: openai.OpenAI, model_id: str) -> None:
    """An assistant message with tool_calls and null content, then a tool result, is accepted."""
    r = client.chat.completions.create(
        model=model_id, temperature=0, max_tokens=20, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "system", "content": "You are Watus, a robot."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 degrees"},
        ],
    )
    assert r.choices[0].message.content or r.choices[0].message.tool_calls


def test_json_schema_response_format_validates(client: openai.OpenAI, model_id: str) -> None:
    import json

    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    r = client.chat.completions.create(
        model=model_id, temperature=0, max_tokens=40,
        messages=[{"role": "user", "content": "Invent a person with a name and an age."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    data = json.loads(r.choices[0].message.content or "")
    assert isinstance(data["name"], str) and isinstance(data["age"], int)
    # A free-form object is only bounded by max_tokens; this prompt makes SmolLM2 close it early.
    r2 = client.chat.completions.create(
        model=model_id, temperature=0, max_tokens=100, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Give me a JSON object with the key colour set to red."}],
    )
    assert r2.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r2.choices[0].message.content or ""), dict)


async def test_async_client_streams(aclient: openai.AsyncOpenAI, model_id: str) -> None:
    stream = await aclient.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, stream=True,
        temperature=0,
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces).strip()
    r = await aclient.completions.create(model=model_id, prompt="The robot said", max_tokens=4)
    assert r.choices[0].text


def test_turn_header_is_echoed_and_metrics_count(llm_url: str, model_id: str) -> None:
    r = httpx.post(llm_url + "/v1/chat/completions", headers={"X-Watus-Turn": "turn-42"},
                   json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}, timeout=30)
    assert r.status_code == 200 and r.headers["x-watus-turn"] == "turn-42"
    text = httpx.get(llm_url + "/metrics").text
    for series in ("watus_llm_ttft_seconds_bucket", "watus_llm_prefill_tokens_per_second_count",
                   "watus_llm_decode_tokens_per_second_count", "watus_llm_queue_wait_seconds_count",
                   'watus_llm_requests_total{endpoint="chat",status="ok"}'):
        assert series in text, series
    health = httpx.get(llm_url + "/health").json()
    assert health["status"] == "ok" and health["model"] == model_id
