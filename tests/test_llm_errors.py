"""Bad input gets an OpenAI-style error body with the right status, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import free_port, run_service

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return dict(err)


@pytest.fixture(autouse=True)
def still_serving(llm_url: str) -> Iterator[None]:
    """After every bad request, a good one still works."""
    yield
    r = httpx.post(llm_url + CHAT, json={"messages": HELLO, "max_tokens": 2}, timeout=30)
    assert r.status_code == 200, r.text


def test_malformed_json(llm_url: str) -> None:
    r = httpx.post(llm_url + CHAT, content=b'{"messages": [', headers={"content-type": "application/json"})
    err = _error(r, 400)
    assert "JSON" in err["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": "hello"}, "messages"),
    ({"messages": HELLO, "max_tokens": "many"}, "max_tokens"),
    ({"messages": HELLO, "temperature": 5}, "temperature"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0"),
    # The legacy `function` role (before `tool`) is not served: OpenAI and vLLM refuse it too.
    ({"messages": [{"role": "function", "name": "f", "content": "hi"}]}, "messages.0"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool"),
    ({}, "messages"),
])
def test_wrong_types_name_the_field(llm_url: str, body: dict[str, Any], param: str) -> None:
    err = _error(httpx.post(llm_url + CHAT, json=body), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] is not None and err["param"].startswith(param), err


def test_empty_messages(llm_url: str) -> None:
    err = _error(httpx.post(llm_url + CHAT, json={"messages": []}), 400)
    assert "at least one message" in err["message"]


def test_n_out_of_range(llm_url: str) -> None:
    err = _error(httpx.post(llm_url + CHAT, json={"messages": HELLO, "n": 65}), 400)
    assert err["param"] == "n" and "64" in err["message"]
    _error(httpx.post(llm_url + CHAT, json={"messages": HELLO, "n": 0}), 400)
    # 64 choices in all per request: 8 prompts x n=9 is too many.
    err = _error(httpx.post(llm_url + "/v1/completions", json={"prompt": ["a"] * 8, "n": 9}), 400)
    assert err["param"] == "n" and "72 choices" in err["message"]


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"stream_options": {"include_usage": True}}, "stream_options", "stream"),
    ({"seed": 2**63}, "seed", "9223372036854775807"),
    ({"seed": -(2**63) - 1}, "seed", "-9223372036854775808"),
    ({"top_logprobs": 3}, "top_logprobs", "logprobs: true"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "20"),
    ({"logit_bias": {"hello": 5}}, "logit_bias", "token ids"),
    ({"logit_bias": {"42": 101}}, "logit_bias", "-100 and 100"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias", "vocabulary"),
])
def test_unsupported_combinations_name_the_parameter(llm_url: str, body: dict[str, Any], param: str,
                                                     words: str) -> None:
    err = _error(httpx.post(llm_url + CHAT, json={"messages": HELLO, "max_tokens": 2, **body}), 400)
    assert err["param"] == param and words in err["message"], err


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"a string"'])
def test_assistant_tool_call_arguments_must_be_a_json_object(llm_url: str, arguments: str) -> None:
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                      "function": {"name": "get_weather", "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "Sunny"}]
    err = _error(httpx.post(llm_url + CHAT, json={"messages": messages, "max_tokens": 2}), 400)
    assert err["param"] == "messages.1.assistant.tool_calls.0.function.arguments"
    assert "JSON object" in err["message"]


def test_stream_options_with_stream_is_fine(llm_url: str) -> None:
    body = {"messages": HELLO, "max_tokens": 2, "stream": True, "stream_options": {"include_usage": True}}
    assert httpx.post(llm_url + CHAT, json=body, timeout=30).status_code == 200
    # An explicit null is no stream_options at all.
    assert httpx.post(llm_url + CHAT, json={"messages": HELLO, "max_tokens": 2, "stream_options": None},
                      timeout=30).status_code == 200


def test_prompt_longer_than_context_says_both_lengths(llm_url: str) -> None:
    long_text = "robot " * 3000
    err = _error(httpx.post(llm_url + CHAT, json={"messages": [{"role": "user", "content": long_text}]}), 400)
    assert err["code"] == "context_length_exceeded"
    assert "2048" in err["message"] and "tokens" in err["message"]
    prompt_tokens = [int(w) for w in err["message"].replace(",", " ").split() if w.isdigit()]
    assert any(n > 2048 for n in prompt_tokens), err["message"]


def test_max_tokens_beyond_context(llm_url: str) -> None:
    err = _error(httpx.post(llm_url + CHAT, json={"messages": HELLO, "max_tokens": 5000}), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "max_tokens"
    assert "5000" in err["message"] and "2048" in err["message"]
    err = _error(httpx.post(llm_url + CHAT, json={"messages": HELLO, "max_completion_tokens": 9000}), 400)
    assert err["param"] == "max_completion_tokens"


@pytest.mark.parametrize("tool", [
    {"type": "function", "function": {"name": "bad name!", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}},
    {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": []}}},
    {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": "x"}}},
    {"type": "retrieval"},
])
def test_invalid_tool_schemas(llm_url: str, tool: dict[str, Any]) -> None:
    err = _error(httpx.post(llm_url + CHAT, json={"messages": HELLO, "tools": [tool]}), 400)
    assert err["param"] is not None and err["param"].startswith("tools")


def test_tool_choice_naming_an_unknown_tool(llm_url: str) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {"messages": HELLO, "tools": [tool], "tool_choice": {"type": "function", "function": {"name": "g"}}}
    err = _error(httpx.post(llm_url + CHAT, json=body), 400)
    assert "'g'" in err["message"]
    err = _error(httpx.post(llm_url + CHAT, json={"messages": HELLO, "tool_choice": "required"}), 400)
    assert "tools" in err["message"]


def test_schema_the_grammar_cannot_take(llm_url: str) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"$ref": "#/definitions/missing"}}}}}
    body = {"messages": HELLO, "tools": [tool], "tool_choice": "required"}
    err = _error(httpx.post(llm_url + CHAT, json=body), 400)
    assert err["param"] == "tools"


def test_unknown_model(llm_url: str) -> None:
    err = _error(httpx.post(llm_url + CHAT, json={"model": "gpt-9", "messages": HELLO}), 404)
    assert err["code"] == "model_not_found" and "gpt-9" in err["message"]
    client = openai.OpenAI(base_url=llm_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=HELLO)  # type: ignore[arg-type]


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [-1, 5]}, "prompt"),
    ({"prompt": [[504], [99999999]]}, "prompt"),
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    # The prompt's own log-probabilities are not computed: echo and logprobs do not go together.
    ({"prompt": "x", "echo": True, "logprobs": 0}, "echo"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
])
def test_completions_bad_requests(llm_url: str, body: dict[str, Any], param: str) -> None:
    err = _error(httpx.post(llm_url + "/v1/completions", json={"max_tokens": 2, **body}), 400)
    assert err["param"] == param, err


def test_unknown_model_in_models_route(llm_url: str) -> None:
    err = _error(httpx.get(llm_url + "/v1/models/gpt-9"), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=llm_url + "/v1", api_key="x", max_retries=0).models.retrieve("gpt-9")


def test_unknown_route_and_method(llm_url: str) -> None:
    _error(httpx.get(llm_url + "/v1/nothing"), 404)
    _error(httpx.get(llm_url + CHAT), 405)


def test_api_key_required_when_set(tmp_path: Any) -> None:
    port = free_port()
    env = {"WATUS_LLM_PORT": str(port), "WATUS_LLM_API_KEY": "s3cret", "WATUS_LLM_MAX_CONCURRENT": "1",
           "WATUS_LLM_WARMUP": "false"}
    with run_service("trt_server", env, port, tmp_path / "log") as url:
        err = _error(httpx.post(url + CHAT, json={"messages": HELLO, "max_tokens": 2}), 401)
        assert err["type"] == "authentication_error"
        _error(httpx.post(url + CHAT, json={"messages": HELLO, "max_tokens": 2},
                          headers={"Authorization": "Bearer wrong"}), 401)
        _error(httpx.get(url + "/v1/models"), 401)
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        r = good.chat.completions.create(model="default", messages=HELLO, max_tokens=2)  # type: ignore[arg-type]
        assert r.choices[0].message.content is not None
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()
        # Health and metrics stay open for probes on loopback.
        assert httpx.get(url + "/health").status_code == 200


def test_response_format_schema_checked(llm_url: str) -> None:
    body = {"messages": HELLO, "response_format": {"type": "json_schema",
                                                   "json_schema": {"name": "x", "schema": {"type": "foo"}}}}
    err = _error(httpx.post(llm_url + CHAT, json=body), 400)
    assert err["param"] == "response_format"
    _error(httpx.post(llm_url + CHAT, json={"messages": HELLO, "response_format": {"type": "json_schema"}}), 400)


def test_a_refusal_in_the_history_is_text_and_an_image_is_a_400(llm_url: str, still_serving: None) -> None:
    """Clients send an assistant's refusal back as a content part: it is text to the template, not a 500."""
    history = [{"role": "user", "content": "Tell me a secret."},
               {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot share that."}]},
               {"role": "user", "content": [{"type": "text", "text": "Then say hello."}]}]
    r = httpx.post(llm_url + CHAT, json={"messages": history, "max_tokens": 4}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] > 10
    image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]
    err = _error(httpx.post(llm_url + CHAT, json={"messages": image}), 400)
    assert err["param"] == "messages" and "image_url" in err["message"] and "part 1" in err["message"]
