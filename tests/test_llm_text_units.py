"""Pure logic of the LLM server: templating, tool-call parsing (whole and streamed), detokenization."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from pydantic import TypeAdapter

from trt_server.protocol import ChatMessage, Tool
from trt_server.templating import CHATML_TEMPLATE, ChatTemplate, TemplateError
from trt_server.textstream import IncrementalDetokenizer, StopMatcher
from trt_server.toolcalls import StreamingToolParser, parse_tool_calls

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The shape of Qwen2.5's template: tools in the system turn, tool_calls and tool results as tags.
QWEN_LIKE = (
    "{%- if tools %}<|im_start|>system\n{{ messages[0]['content'] if messages[0]['role'] == 'system' else '' }}"
    "\n<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools><|im_end|>\n{%- endif %}"
    "{%- for m in messages %}{%- if m.role == 'system' and tools %}{%- elif m.role == 'assistant' and m.tool_calls %}"
    "<|im_start|>assistant\n{% for c in m.tool_calls %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", "
    "\"arguments\": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)

_messages = TypeAdapter(list[ChatMessage])
_tools = TypeAdapter(list[Tool])
WEATHER = _tools.validate_python([{"type": "function", "function": {
    "name": "get_weather", "description": "Weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
TOOL_TURNS = _messages.validate_python([
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
])


def test_model_template_renders_like_hugging_face() -> None:
    t = ChatTemplate(SMOLLM2_TEMPLATE, "<|im_start|>", "<|im_end|>")
    msgs = _messages.validate_python([{"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                                   {"type": "text", "text": " there"}]}])
    assert t.render(msgs) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")


def test_template_without_tool_support_gets_hermes_instructions_and_tags() -> None:
    t = ChatTemplate(SMOLLM2_TEMPLATE)
    text = t.render(TOOL_TURNS, WEATHER)
    assert text.startswith("<|im_start|>system\nYou can call functions.")
    assert '"name": "get_weather"' in text.split("</tools>")[0]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    # The template has no 'tool' role: the result comes back as a user turn.
    assert "<|im_start|>user\n<tool_response>\nSunny\n</tool_response><|im_end|>" in text


def test_template_with_tools_gets_them_natively() -> None:
    t = ChatTemplate(QWEN_LIKE)
    text = t.render(TOOL_TURNS, WEATHER)
    assert "You can call functions" not in text
    assert '{"type": "function", "function": {"name": "get_weather"' in text
    assert '"arguments": {"city": "Paris"}' in text
    assert "<tool_response>\nSunny\n</tool_response>" in text


def test_no_template_falls_back_to_chatml_and_errors_are_template_errors() -> None:
    assert ChatTemplate(None).source == CHATML_TEMPLATE
    strict = ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}")
    with pytest.raises(TemplateError, match="user first"):
        strict.render(_messages.validate_python([{"role": "system", "content": "x"}]))
    with pytest.raises(TemplateError):
        ChatTemplate("{% for %}")


@pytest.mark.parametrize(("text", "content", "calls"), [
    ("Hello there", "Hello there", []),
    ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', "", [("f", {"a": 1})]),
    ('Let me check.<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "g", '
     '"arguments": {"x": "y"}}</tool_call>', "Let me check.", [("f", {}), ("g", {"x": "y"})]),
    ('{"name": "f", "parameters": {"a": 2}}', "", [("f", {"a": 2})]),
    ('<|python_tag|>{"name": "f", "parameters": {}}; {"name": "g", "parameters": {"b": true}}', "",
     [("f", {}), ("g", {"b": True})]),
    ('[TOOL_CALLS][{"name": "f", "arguments": {"q": "x"}}]', "", [("f", {"q": "x"})]),
    ('{"answer": 42}', '{"answer": 42}', []),  # JSON that is not a call stays content
    ("<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>", []),
    ('<tool_call>{"name": "f", "arguments": {"a": 1}}', "", [("f", {"a": 1})]),  # unclosed at the end
])
def test_parse_complete_outputs(text: str, content: str, calls: list[tuple[str, dict[str, object]]]) -> None:
    got_content, got = parse_tool_calls(text)
    assert got_content == content
    assert [(c.name, json.loads(c.arguments)) for c in got] == calls
    assert all(c.id.startswith("call_") for c in got)


def _stream(text: str, sizes: Sequence[int], json_only: bool = False) -> tuple[str, list[tuple[str, str]]]:
    parser = StreamingToolParser(json_only=json_only)
    content, calls, i, k = "", [], 0, 0
    while i < len(text):
        n = sizes[k % len(sizes)]
        ev = parser.feed(text[i:i + n])
        content += ev.content
        calls += [(c.name, c.arguments) for c in ev.tool_calls]
        i, k = i + n, k + 1
    ev = parser.finish()
    return content + ev.content, calls + [(c.name, c.arguments) for c in ev.tool_calls]


@pytest.mark.parametrize("text", [
    "Plain answer with a < sign and <b>tags</b>.",
    'Sure.<tool_call>\n{"name": "f", "arguments": {"a": [1, 2]}}\n</tool_call>',
    '  {"name": "f", "arguments": {"city": "Łódź"}}',
    '<tool_call>{"name": "f", "arguments": {}}</tool_call>\n<tool_call>{"name": "g", "arguments": {}}</tool_call>',
    "[1] is a citation, not a call.",
])
@pytest.mark.parametrize("sizes", [[1], [2, 3], [7], [1000]])
def test_streamed_parse_matches_complete_parse(text: str, sizes: list[int]) -> None:
    content, calls = _stream(text, sizes)
    whole_content, whole_calls = parse_tool_calls(text)
    assert [n for n, _ in calls] == [c.name for c in whole_calls]
    assert [json.loads(a) for _, a in calls] == [json.loads(c.arguments) for c in whole_calls]
    assert content.strip() == whole_content.strip()


def test_streaming_text_is_not_held_back() -> None:
    parser = StreamingToolParser()
    assert parser.feed("Hello").content == "Hello"
    assert parser.feed(" wor").content == " wor"
    assert parser.feed("ld <tool").content == "ld "  # only what may start a tag waits
    assert parser.feed("s are fun>").content == "<tools are fun>"


class _ByteTokenizer:
    """A byte-level tokenizer: every token is one byte, so 'ł' (2 bytes) spans two tokens."""

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def test_incremental_detokenizer_never_splits_characters() -> None:
    text = "Zażółć gęślą jaźń 🤖!"
    detok = IncrementalDetokenizer(_ByteTokenizer())
    out = [detok.add([b]) for b in text.encode()]
    out.append(detok.flush())
    assert "".join(out) == text
    assert not any("\ufffd" in piece for piece in out)


def test_stop_matcher_across_deltas() -> None:
    m = StopMatcher(["\nUser:", "STOP"])
    emitted = [m.feed(d) for d in ["Hello", " wor", "ld\nUs", "er: more"]]
    assert "".join(emitted) == "Hello world"
    assert m.stopped
    m2 = StopMatcher(["</s>"])
    assert m2.feed("a <") == "a "
    assert m2.feed("b") == "<b"
    assert m2.flush() == ""
    assert StopMatcher([]).feed("x") == "x"
