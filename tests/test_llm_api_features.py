"""The API features peer servers have and clients use, through the real `openai` SDK on the default model.

Log-probabilities (chat and legacy completions, streamed and not), `n` choices (reproducible with a seed),
several prompts per completions request, `logit_bias`, `GET /v1/models/{id}` and the routes without
`/v1`, a forced tool call cut by `max_tokens`, and tool schemas whose nested models sit in `$defs`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from tests.helpers import free_port, run_service

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The capital of France is"
#: SmolLM2's token for " Paris", the model's greedy answer to PROMPT (checked by echo below).
PARIS = 7042
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
IGNORE_EOS = {"ignore_eos": True}


@pytest.fixture(scope="module")
def client(llm_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm_url + "/v1", api_key="unused", max_retries=0)


# --------------------------------------------------------------------------- models and routes


def test_models_retrieve(client: openai.OpenAI, model_id: str) -> None:
    m = client.models.retrieve(model_id)
    assert m.id == model_id and m.object == "model"
    assert client.models.retrieve("default").id == "default"  # the name every request may use


def test_routes_without_v1(llm_url: str, model_id: str) -> None:
    bare = openai.OpenAI(base_url=llm_url, api_key="unused", max_retries=0)
    assert [m.id for m in bare.models.list().data] == [model_id]
    assert bare.models.retrieve(model_id).id == model_id
    r = bare.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=3)
    assert r.choices[0].message.content
    assert bare.completions.create(model=model_id, prompt=PROMPT, max_tokens=2).choices[0].text
    # Not in the OpenAPI schema twice.
    paths = httpx.get(llm_url + "/openapi.json").json()["paths"]
    assert "/v1/chat/completions" in paths and "/chat/completions" not in paths


# --------------------------------------------------------------------------- logprobs


def test_chat_logprobs_match_the_text(client: openai.OpenAI, model_id: str) -> None:
    r = client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=8,
                                       logprobs=True, top_logprobs=3, temperature=0, extra_body=IGNORE_EOS)
    choice = r.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert r.usage is not None and len(entries) == r.usage.completion_tokens == 8
    assert "".join(e.token for e in entries) == choice.message.content
    assert b"".join(bytes(e.bytes or []) for e in entries).decode() == choice.message.content
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy decoding picks the most likely token.
        assert e.top_logprobs[0].token == e.token and abs(e.top_logprobs[0].logprob - e.logprob) < 1e-5
    # logprobs without top_logprobs: the sampled tokens' own, no alternatives.
    bare = client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=8,
                                          logprobs=True, temperature=0, extra_body=IGNORE_EOS)
    assert bare.choices[0].logprobs is not None and bare.choices[0].logprobs.content is not None
    assert [e.top_logprobs for e in bare.choices[0].logprobs.content] == [[]] * 8
    assert [round(e.logprob, 4) for e in bare.choices[0].logprobs.content] == [round(e.logprob, 4) for e in entries]
    plain = client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=2)
    assert plain.choices[0].logprobs is None
    # A reply that ends by itself: the end-of-generation token is not among them.
    arithmetic = "What is 2+2? Answer with one number."
    short = client.chat.completions.create(model=model_id, max_tokens=40, temperature=0, logprobs=True,
                                           messages=[{"role": "user", "content": arithmetic}])
    assert short.choices[0].finish_reason == "stop" and short.choices[0].logprobs is not None
    assert short.usage is not None and len(short.choices[0].logprobs.content or []) == short.usage.completion_tokens
    assert "".join(e.token for e in short.choices[0].logprobs.content or []) == short.choices[0].message.content


def test_chat_logprobs_stream_with_their_text(client: openai.OpenAI, model_id: str) -> None:
    stream = client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=8, logprobs=True,
                                            top_logprobs=2, stream=True, temperature=0, extra_body=IGNORE_EOS)
    text, tokens = "", list[str]()
    for c in stream:
        if not c.choices:
            continue
        delta_text = c.choices[0].delta.content or ""
        got = [e.token for e in (c.choices[0].logprobs.content or [])] if c.choices[0].logprobs else []
        # Each event's tokens spell exactly the text it carries.
        assert "".join(got) == delta_text
        text += delta_text
        tokens += got
    assert len(tokens) == 8 and "".join(tokens) == text


def test_completions_logprobs_zero_and_more(client: openai.OpenAI, model_id: str) -> None:
    r = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=6, logprobs=0, temperature=0,
                                  extra_body=IGNORE_EOS)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.top_logprobs == [{}] * 6
    offsets = [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    assert lp.text_offset == offsets
    five = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=6, logprobs=5, temperature=0,
                                     extra_body=IGNORE_EOS)
    lp5 = five.choices[0].logprobs
    assert lp5 is not None and lp5.top_logprobs is not None and lp5.tokens == lp.tokens
    for token, logprob, top in zip(lp5.tokens or [], lp5.token_logprobs or [], lp5.top_logprobs, strict=True):
        assert 1 <= len(top) <= 5 and abs(top[token] - logprob) < 1e-5


def test_completions_logprobs_streamed_and_cut_by_a_stop(client: openai.OpenAI, model_id: str) -> None:
    stream = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=6, logprobs=1, stream=True,
                                       temperature=0, extra_body=IGNORE_EOS)
    text, tokens = "", list[str]()
    for c in stream:
        if c.choices:
            text += c.choices[0].text
            tokens += (c.choices[0].logprobs.tokens or []) if c.choices[0].logprobs else []
    assert len(tokens) == 6 and "".join(tokens) == text
    # Tokens a stop string cut off are not reported.
    cut = client.completions.create(model=model_id, prompt="1, 2, 3, 4, 5,", max_tokens=12, temperature=0,
                                    stop=[" 7"], logprobs=1)
    lp = cut.choices[0].logprobs
    assert lp is not None and lp.tokens is not None
    assert cut.choices[0].finish_reason == "stop" and "".join(lp.tokens) == cut.choices[0].text
    assert "7" not in "".join(lp.tokens)


# --------------------------------------------------------------------------- n and several prompts


def test_n_choices_are_reproducible_with_a_seed(client: openai.OpenAI, model_id: str) -> None:
    def ask() -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "Tell me about robots."}],
            max_tokens=12, temperature=1.0, n=3, seed=11, extra_body={"ignore_eos": True})

    first, second = ask(), ask()
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in second.choices]
    assert len(set(texts)) > 1, "each choice samples with its own seed"
    assert first.usage is not None and first.usage.completion_tokens == 36
    # The prompt is counted once, as OpenAI does.
    one = client.chat.completions.create(model=model_id, max_tokens=1,
                                         messages=[{"role": "user", "content": "Tell me about robots."}])
    assert one.usage is not None and first.usage.prompt_tokens == one.usage.prompt_tokens


def test_n_choices_stream_interleaved(client: openai.OpenAI, model_id: str) -> None:
    stream = client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=6, n=2, stream=True,
                                            stream_options={"include_usage": True}, temperature=0,
                                            extra_body=IGNORE_EOS)
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    roles: list[int] = []
    chunks = list(stream)
    for c in chunks:
        for choice in c.choices:
            if choice.delta.role:
                roles.append(choice.index)
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert sorted(roles) == [0, 1] and finishes == {0: "length", 1: "length"}
    # Greedy: both choices are the same answer.
    assert texts[0] == texts[1] and texts[0].strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_completions_with_several_prompts(client: openai.OpenAI, model_id: str) -> None:
    prompts = [PROMPT, "Once upon a time"]
    alone = [client.completions.create(model=model_id, prompt=p, max_tokens=5, temperature=0, extra_body=IGNORE_EOS)
             for p in prompts]
    r = client.completions.create(model=model_id, prompt=prompts, max_tokens=5, n=2, temperature=0,
                                  extra_body=IGNORE_EOS)
    # OpenAI's order: the n choices of each prompt in turn.
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    expected = [alone[0].choices[0].text] * 2 + [alone[1].choices[0].text] * 2
    assert [c.text for c in r.choices] == expected
    assert r.usage is not None and alone[0].usage is not None and alone[1].usage is not None
    assert r.usage.prompt_tokens == alone[0].usage.prompt_tokens + alone[1].usage.prompt_tokens
    assert r.usage.completion_tokens == 20
    # Token-id prompts, streamed.
    stream = client.completions.create(model=model_id, prompt=[[504, 3575, 282], [4649, 314]], max_tokens=3,
                                       stream=True, stream_options={"include_usage": True}, temperature=0,
                                       extra_body=IGNORE_EOS)
    chunks = list(stream)
    got: dict[int, str] = {}
    for c in chunks:
        for choice in c.choices:
            got[choice.index] = got.get(choice.index, "") + choice.text
    assert sorted(got) == [0, 1] and all(got.values())
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 5


def test_usage_counts_the_prompt_tokens_reused_from_the_cache(client: openai.OpenAI, model_id: str) -> None:
    """A conversation's next request repeats the last one's prompt: llama.cpp reuses that prefix (its `cache_n`)
    and usage says how much, as OpenAI's `prompt_tokens_details.cached_tokens` does."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are Watus, a robot in a kitchen. Answer in one short sentence. " * 6},
        {"role": "user", "content": "What do you see on the table?"}]
    first = client.chat.completions.create(model=model_id, messages=messages, max_tokens=3, temperature=0)
    assert first.usage is not None and first.choices[0].message.content
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And under it?"}]
    stream = client.chat.completions.create(model=model_id, messages=messages, max_tokens=3, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    usage = [c.usage for c in stream if c.usage is not None][-1]
    details = usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None, usage
    # The whole first prompt but its last few tokens (the chat template's ending differs) came from the cache.
    assert first.usage.prompt_tokens - 10 <= details.cached_tokens < usage.prompt_tokens, (first.usage, usage)


# --------------------------------------------------------------------------- logit_bias


def test_logit_bias_bans_and_forces_a_token(client: openai.OpenAI, model_id: str) -> None:
    echoed = client.completions.create(model=model_id, prompt=[PARIS], echo=True, max_tokens=1)
    assert echoed.choices[0].text.startswith(" Paris")
    plain = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=4, temperature=0)
    assert plain.choices[0].text.startswith(" Paris")
    banned = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=4, temperature=0,
                                       logit_bias={str(PARIS): -100})
    assert "Paris" not in banned.choices[0].text
    chat = client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=3,
                                          logit_bias={str(PARIS): 100}, temperature=0, extra_body=IGNORE_EOS)
    assert (chat.choices[0].message.content or "").count("Paris") == 3
    stream = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=4, temperature=0, stream=True,
                                       logit_bias={str(PARIS): -100})
    assert "Paris" not in "".join(c.choices[0].text for c in stream if c.choices)


# --------------------------------------------------------------------------- tool calls


def _streamed_calls(stream: Any) -> tuple[str, dict[int, dict[str, str]], str | None]:
    content, calls, finish = "", dict[int, dict[str, str]](), None
    for c in stream:
        if not c.choices:
            continue
        content += c.choices[0].delta.content or ""
        for d in c.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
            entry["name"] += (d.function.name or "") if d.function else ""
            entry["arguments"] += (d.function.arguments or "") if d.function else ""
        finish = c.choices[0].finish_reason or finish
    return content, calls, finish


@pytest.mark.parametrize("max_tokens", [4, 16])
def test_forced_tool_call_cut_by_max_tokens_stays_a_call(client: openai.OpenAI, model_id: str,
                                                         max_tokens: int) -> None:
    kwargs: dict[str, Any] = {"model": model_id, "messages": [{"role": "user", "content": "Weather in Paris?"}],
                              "tools": [WEATHER_TOOL], "tool_choice": "required", "max_tokens": max_tokens,
                              "temperature": 0}
    r = client.chat.completions.create(**kwargs)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "length"
    assert not msg.content, msg.content  # never the call's JSON as text
    assert msg.tool_calls and msg.tool_calls[0].function.name == "get_weather"
    content, calls, finish = _streamed_calls(client.chat.completions.create(**kwargs, stream=True))
    assert finish == "length" and not content
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert calls[0]["arguments"] == msg.tool_calls[0].function.arguments


class WeatherOptions(BaseModel):
    unit: Literal["celsius", "fahrenheit"]
    days: int


class WeatherArgs(BaseModel):
    city: str
    options: WeatherOptions


NESTED_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                                "parameters": WeatherArgs.model_json_schema()}}


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_call_with_defs_in_the_schema(client: openai.OpenAI, model_id: str, choice: Any) -> None:
    assert "$defs" in json.dumps(NESTED_TOOL)  # pydantic puts nested models there, referenced by $ref
    wave = {"type": "function", "function": {"name": "wave", "parameters": {"type": "object", "properties": {}}}}
    kwargs: dict[str, Any] = {"model": model_id, "tools": [NESTED_TOOL, wave], "tool_choice": choice,
                              "messages": [{"role": "user", "content": "Weather in Paris for 3 days?"}],
                              "max_tokens": 150, "temperature": 0}
    r = client.chat.completions.create(**kwargs)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and calls
    if choice != "required":
        assert calls[0].function.name == "get_weather"
    if calls[0].function.name == "get_weather":
        WeatherArgs.model_validate_json(calls[0].function.arguments)
    _, streamed, finish = _streamed_calls(client.chat.completions.create(**kwargs, stream=True))
    assert finish == "tool_calls" and streamed[0]["arguments"] == calls[0].function.arguments


# --------------------------------------------------------------------------- model aliases


@pytest.fixture(scope="module")
def alias_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {"WATUS_LLM_PORT": str(port), "WATUS_LLM_MODEL_ALIASES": "gpt-4o-mini,my-robot",
           "WATUS_LLM_MAX_CONCURRENT": "1", "WATUS_LLM_WARMUP": "false", "WATUS_LLM_THREADS": "2",
           "WATUS_LLM_API_KEY": ""}
    log: Path = tmp_path_factory.mktemp("alias") / "server.log"
    with run_service("trt_server", env, port, log) as url:
        yield url


@pytest.mark.slow
def test_model_aliases_for_off_the_shelf_clients(alias_server: str) -> None:
    client = openai.OpenAI(base_url=alias_server + "/v1", api_key="unused", max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert ids[1:] == ["gpt-4o-mini", "my-robot"] and ids[0].startswith("SmolLM2")
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    r = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=2)
    assert r.choices[0].message.content is not None and r.model == ids[0]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
