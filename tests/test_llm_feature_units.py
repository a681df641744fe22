"""Pure logic behind logprobs, `n`, several prompts, cut tool calls, `$defs` and per-engine support.

No server: admission and fan-out with asyncio, the token/text alignment, the tool-call parser, the call
schema, and the 400s an engine without these features (TensorRT-LLM today) gets, through its
`Capabilities`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import jsonschema
import pytest
from pydantic import BaseModel

from trt_server.admission import Admission
from trt_server.engines.base import Capabilities, TokenLogprob
from trt_server.errors import BadRequestError, OverloadedError
from trt_server.fanout import all_of, merge
from trt_server.generation import LLMMetrics
from trt_server.logprobs import LegacyLogprobs, TokenQueue, chat_content
from trt_server.protocol import ChatCompletionRequest, CompletionRequest
from trt_server.schemas import check_json_schema
from trt_server.serving import ServerState
from trt_server.settings import LLMSettings
from trt_server.support import check_chat, check_completion
from trt_server.toolcalls import IncompleteToolCallError, StreamingToolParser, partial_call
from trt_server.toolchoice import plan_tools, rebased_refs
from watus.core import metrics as m

# --------------------------------------------------------------------------- admission


def _admission(slots: int, queue: int = 8, timeout: float = 5.0) -> Admission:
    return Admission(slots, queue, timeout, LLMMetrics(m.new_registry()))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_takes_all_its_slots_at_once_and_in_order() -> None:
    adm = _admission(2)
    await adm.acquire(1)
    big = asyncio.ensure_future(adm.acquire(2))  # needs both: waits
    small = asyncio.ensure_future(adm.acquire(1))  # one is free, but it came after `big`
    await _settle()
    assert not big.done() and not small.done() and adm.waiting == 2
    adm.release(1)
    await _settle()
    assert big.done() and not small.done()
    adm.release(2)
    await _settle()
    assert small.done() and adm.waiting == 0


async def test_a_waiter_that_gives_up_lets_the_next_one_in() -> None:
    adm = _admission(2, timeout=0.05)
    await adm.acquire(1)
    big = asyncio.ensure_future(adm.acquire(2))
    await _settle()
    small = asyncio.ensure_future(adm.acquire(1))
    with pytest.raises(OverloadedError):
        await big  # timed out: 503
    await _settle()
    assert small.done() and adm.waiting == 0
    cancelled = asyncio.ensure_future(adm.acquire(1))
    await _settle()
    cancelled.cancel()
    await _settle()
    assert adm.waiting == 0
    adm.release(1)
    adm.release(1)
    assert (await adm.acquire(2)) >= 0  # every slot came back


async def test_full_queue_and_bad_weights() -> None:
    adm = _admission(1, queue=0)
    await adm.acquire()
    with pytest.raises(OverloadedError):
        await adm.acquire()
    with pytest.raises(ValueError):
        await adm.acquire(2)


# --------------------------------------------------------------------------- fan-out


async def _counting(name: str, n: int, log: list[str], delay: float = 0.0) -> AsyncIterator[str]:
    try:
        for i in range(n):
            await asyncio.sleep(delay)
            yield f"{name}{i}"
    finally:
        log.append(f"{name} closed")


async def test_merge_keeps_each_sources_order_and_closes_them() -> None:
    log: list[str] = []
    got = [x async for x in merge([_counting("a", 3, log), _counting("b", 2, log)])]
    assert sorted(got) == ["a0", "a1", "a2", "b0", "b1"]
    assert [x for x in got if x[0] == "a"] == ["a0", "a1", "a2"]
    assert sorted(log) == ["a closed", "b closed"]
    # A consumer that stops early (a client gone) closes every source.
    log.clear()
    merged = merge([_counting("a", 100, log, 0.001), _counting("b", 100, log, 0.001)])
    assert (await merged.__anext__())[0] in "ab"
    await merged.aclose()  # type: ignore[attr-defined]
    assert sorted(log) == ["a closed", "b closed"]


async def test_a_failure_stops_the_siblings() -> None:
    log: list[str] = []

    async def failing() -> AsyncIterator[str]:
        await asyncio.sleep(0.01)
        raise RuntimeError("engine broke")
        yield ""

    with pytest.raises(RuntimeError, match="engine broke"):
        _ = [x async for x in merge([failing(), _counting("b", 1000, log, 0.001)])]
    assert log == ["b closed"]

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        finally:
            log.append("slow cancelled")
        return "never"

    async def broken() -> str:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        await all_of([slow(), broken()])
    assert log[-1] == "slow cancelled"
    assert await all_of([asyncio.sleep(0, "x"), asyncio.sleep(0, "y")]) == ["x", "y"]


# --------------------------------------------------------------------------- logprobs and text


def _tok(text: str, lp: float = -0.5, raw: bytes | None = None) -> TokenLogprob:
    return TokenLogprob(token_id=1, logprob=lp, token=text, token_bytes=raw)


def test_tokens_wait_for_their_text_and_a_stop_drops_the_rest() -> None:
    q = TokenQueue()
    q.add([_tok(" 6"), _tok(","), _tok(" "), _tok("7")])
    assert [e.token for e in q.sent(" 6")] == [" 6"]
    assert q.sent("") == []
    assert [e.token for e in q.sent(",")] == [","]
    # The stop string " 7" cut the text after ",": the tokens spelling it are not reported.
    assert q.finish(cut=True) == []
    q2 = TokenQueue()
    q2.add([_tok("a"), _tok("b")])
    assert [e.token for e in q2.finish(cut=False)] == ["a", "b"]


def test_tokens_are_matched_by_bytes_not_characters() -> None:
    # "é" (2 bytes) split over two byte-level tokens whose own text is a replacement character each.
    q = TokenQueue()
    q.add([_tok("\ufffd", raw=b"\xc3"), _tok("\ufffd", raw=b"\xa9"), _tok("!")])
    assert len(q.sent("é")) == 2
    assert [e.token for e in q.sent("!")] == ["!"]


def test_openai_shapes_of_logprobs() -> None:
    entries = [TokenLogprob(5, -0.1, " Paris", b" Paris", (_tok(" Paris", -0.1), _tok(" the", -2.0))),
               TokenLogprob(6, -0.3, ".", b".", (_tok(".", -0.3), _tok(",", -1.5)))]
    chat = chat_content(entries, 1)
    assert chat[0] == {"token": " Paris", "logprob": -0.1, "bytes": list(b" Paris"),
                       "top_logprobs": [{"token": " Paris", "logprob": -0.1, "bytes": list(b" Paris")}]}
    legacy = LegacyLogprobs(top=2, offset=3)
    first = legacy.block(entries[:1])
    assert first == {"tokens": [" Paris"], "token_logprobs": [-0.1], "top_logprobs": [{" Paris": -0.1, " the": -2.0}],
                     "text_offset": [3]}
    assert legacy.block(entries[1:])["text_offset"] == [9]


# --------------------------------------------------------------------------- cut tool calls


def _finish(text: str, *, json_only: bool, names: tuple[str, ...] = ("get_weather",)) -> Any:
    parser = StreamingToolParser(json_only=json_only, names=names)
    content = parser.feed(text).content
    end = parser.finish()
    return content + end.content, [(c.name, c.arguments, c.complete) for c in parser.calls]


@pytest.mark.parametrize(("text", "call"), [
    ('{"name": "get_weather", "arguments": {"city": "Pa', ("get_weather", '{"city": "Pa', False)),
    ('{\n  "name": "get_weather",\n  "', ("get_weather", "", False)),
    ('{"name": "get_we', ("get_weather", "", False)),  # the only function the name can be
    ('{"na', ("get_weather", "", False)),
    ("", ("get_weather", "", False)),
    ('{"name": "get_weather", "arguments": {"city": "Paris"}}', ("get_weather", '{"city": "Paris"}', True)),
])
def test_a_forced_call_cut_short_is_still_a_call(text: str, call: tuple[str, str, bool]) -> None:
    assert _finish(text, json_only=True) == ("", [call])


def test_a_cut_call_whose_name_is_unknown_is_an_error() -> None:
    with pytest.raises(IncompleteToolCallError):
        _finish('{"name": "get_', json_only=True, names=("get_weather", "get_time"))
    with pytest.raises(IncompleteToolCallError):
        _finish('{"na', json_only=True, names=("get_weather", "get_time"))


def test_calls_cut_in_free_text() -> None:
    # A <tool_call> the output ended inside is a call, not text.
    assert _finish('Sure. <tool_call>\n{"name": "get_weather", "arguments": {"ci', json_only=False) == (
        "Sure. ", [("get_weather", '{"ci', False)])
    # JSON that is not a call stays content.
    assert _finish('{"colour": "re', json_only=False) == ('{"colour": "re', [])
    assert partial_call("hello", ["f"]) is None


# --------------------------------------------------------------------------- $defs in tool schemas


class Options(BaseModel):
    unit: str
    days: int


class Args(BaseModel):
    city: str
    options: Options


def _tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": Args.model_json_schema()}}


@pytest.mark.parametrize("n_tools", [1, 2])
def test_call_schema_resolves_refs_of_nested_models(n_tools: int) -> None:
    tools = [_tool("get_weather"), _tool("other")][:n_tools]
    req = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], "tools": tools,
                                                "tool_choice": "required"})
    schema = plan_tools(req, grammar=True).schema
    assert schema is not None
    check_json_schema(schema)  # was: "$ref '#/$defs/Options' does not resolve"
    good = {"name": "get_weather", "arguments": {"city": "Paris", "options": {"unit": "c", "days": 2}}}
    jsonschema.validate(good, schema)
    bad = {"name": "get_weather", "arguments": {"city": "Paris", "options": {"unit": "c", "days": "two"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_rebasing_leaves_data_and_anchors_alone() -> None:
    schema = {"properties": {"const": {"$ref": "#/$defs/A"}, "x": {"const": {"$ref": "#/not/a/ref"}}},
              "$defs": {"A": {"$ref": "#"}}, "items": {"$ref": "#anchor"}}
    out = rebased_refs(schema, "#/properties/arguments")
    assert out["properties"]["const"] == {"$ref": "#/properties/arguments/$defs/A"}
    assert out["properties"]["x"] == {"const": {"$ref": "#/not/a/ref"}}
    assert out["$defs"]["A"] == {"$ref": "#/properties/arguments"}
    assert out["items"] == {"$ref": "#anchor"}


# --------------------------------------------------------------------------- per-engine support

#: What TensorRT-LLM's engine declares until it implements these (the defaults of Capabilities).
TRTLLM = Capabilities(max_context=4096, supports_grammar=True, name="trtllm")
#: A sampled-token-only engine (e.g. TensorRT-LLM 0.12's `logprobs`).
SAMPLED_ONLY = Capabilities(max_context=4096, supports_grammar=True, name="x", max_logprobs=0)
LLAMACPP = Capabilities(max_context=4096, supports_grammar=True, name="llamacpp", max_logprobs=20,
                        supports_parallel_choices=True, supports_logit_bias=True, vocab_size=100)
HELLO = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("body", "caps", "param"), [
    ({"n": 2}, TRTLLM, "n"),
    ({"logprobs": True}, TRTLLM, "logprobs"),
    ({"logprobs": True, "top_logprobs": 2}, SAMPLED_ONLY, "top_logprobs"),
    ({"logit_bias": {"5": -100}}, TRTLLM, "logit_bias"),
    ({"logit_bias": {"100": 1}}, LLAMACPP, "logit_bias"),
    ({"top_logprobs": 2}, LLAMACPP, "top_logprobs"),
    ({"stream_options": {"include_usage": True}}, LLAMACPP, "stream_options"),
])
def test_chat_400s_name_the_parameter(body: dict[str, Any], caps: Capabilities, param: str) -> None:
    req = ChatCompletionRequest.model_validate({"messages": HELLO, **body})
    with pytest.raises(BadRequestError) as info:
        check_chat(req, caps)
    assert info.value.param == param
    if caps is TRTLLM:
        assert "trtllm" in info.value.message


@pytest.mark.parametrize(("body", "caps", "param"), [
    ({"prompt": ["a", "b"]}, TRTLLM, "prompt"),
    ({"prompt": "a", "n": 2}, TRTLLM, "n"),
    ({"prompt": "a", "logprobs": 0}, TRTLLM, "logprobs"),
    ({"prompt": "a", "logprobs": 1}, SAMPLED_ONLY, "logprobs"),
    ({"prompt": "a", "logprobs": 0, "echo": True}, LLAMACPP, "echo"),
    ({"prompt": "a", "suffix": "b"}, LLAMACPP, "suffix"),
    ({"prompt": "a", "best_of": 2}, LLAMACPP, "best_of"),
])
def test_completions_400s_name_the_parameter(body: dict[str, Any], caps: Capabilities, param: str) -> None:
    req = CompletionRequest.model_validate(body)
    with pytest.raises(BadRequestError) as info:
        check_completion(req, caps, len(req.prompts()))
    assert info.value.param == param


def test_what_engines_support_passes() -> None:
    check_chat(ChatCompletionRequest.model_validate({"messages": HELLO, "logprobs": True}), SAMPLED_ONLY)
    full = {"messages": HELLO, "n": 3, "logprobs": True, "top_logprobs": 20, "logit_bias": {"99": 5}}
    check_chat(ChatCompletionRequest.model_validate(full), LLAMACPP)
    req = CompletionRequest.model_validate({"prompt": [[1, 2], [3]], "n": 2, "logprobs": 5, "best_of": 2})
    check_completion(req, LLAMACPP, len(req.prompts()))


# --------------------------------------------------------------------------- model names


@pytest.mark.parametrize(("aliases", "accepted", "refused"), [
    ("", ["m", "default"], ["gpt-4o-mini"]),
    ("gpt-4o-mini,robot", ["m", "default", "gpt-4o-mini", "robot"], ["gpt-4o"]),
    ("*", ["m", "anything", "gpt-4o"], []),
])
def test_model_names_and_aliases(aliases: str, accepted: list[str], refused: list[str]) -> None:
    state = ServerState(settings=LLMSettings(model_aliases=aliases), engine=cast(Any, SimpleNamespace(model_id="m")),
                        template=cast(Any, None), metrics=cast(Any, None), admission=cast(Any, None),
                        validate_schema=lambda s: None)
    assert all(state.accepts(n) for n in accepted)
    assert not any(state.accepts(n) for n in refused)
    assert state.model_names == ["m", *[a for a in aliases.split(",") if a and a != "*"]]
