"""JSON under a grammar closes within `max_tokens`: bounded strings, whitespace, numbers and arrays.

The builder is checked without a model by a small reader of the grammar it writes (llguidance's
Lark): the longest sentence is exactly `max_bytes`, and random sentences are JSON that validates
against the schema, written compactly. Then the real default model: a pydantic-ai Agent with a
structured output (a forced call) over many seeds, and `response_format` `json_schema` at a small
`max_tokens` and a high temperature.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from trt_server.jsonbudget import FREE_DEPTH, JsonLimits, compact_schema, fitted_grammar
from trt_server.jsongrammar import Limits, UnsupportedSchemaError, json_grammar

# --------------------------------------------------------------------------- a reader of the grammar


@dataclass
class _Node:
    kind: str  # lit | cls | ref | alt | seq | rep
    value: Any = None
    kids: tuple[_Node, ...] = ()
    least: int = 1
    most: int = 1


def _unescape(text: str, i: int) -> tuple[str, int]:
    """One character of a literal or class at `text[i]`, and the index after it."""
    if text[i] != "\\":
        return text[i], i + 1
    c = text[i + 1]
    width = {"x": 2, "u": 4, "U": 8}.get(c)
    if width:
        return chr(int(text[i + 2:i + 2 + width], 16)), i + 2 + width
    return {"n": "\n", "t": "\t", "r": "\r"}.get(c, c), i + 2


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0

    def skip(self) -> None:
        while self.i < len(self.text) and self.text[self.i] == " ":
            self.i += 1

    def alt(self) -> _Node:
        options = [self.seq()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.seq())
        return options[0] if len(options) == 1 else _Node("alt", kids=tuple(options))

    def peek(self) -> str:
        self.skip()
        return self.text[self.i] if self.i < len(self.text) else ""

    def seq(self) -> _Node:
        items = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.item())
        return _Node("seq", kids=tuple(items))

    def item(self) -> _Node:
        atom = self.atom()
        c = self.text[self.i] if self.i < len(self.text) else ""
        if c == "?":
            self.i += 1
            return _Node("rep", kids=(atom,), least=0, most=1)
        if c == "{":
            end = self.text.index("}", self.i)
            lo, _, hi = self.text[self.i + 1:end].partition(",")
            self.i = end + 1
            return _Node("rep", kids=(atom,), least=int(lo), most=int(hi) if hi else int(lo))
        return atom

    def atom(self) -> _Node:
        c = self.peek()
        if c == "(":
            self.i += 1
            inner = self.alt()
            assert self.peek() == ")"
            self.i += 1
            return inner
        if c == '"':
            out, self.i = "", self.i + 1
            while self.text[self.i] != '"':
                ch, self.i = _unescape(self.text, self.i)
                out += ch
            self.i += 1
            return _Node("lit", out)
        if c == "/":  # only ever one character class: /[...]/
            assert self.text[self.i + 1] == "["
            ranges, self.i = [], self.i + 2
            while self.text[self.i] != "]":
                a, self.i = _unescape(self.text, self.i)
                b = a
                if self.text[self.i] == "-" and self.text[self.i + 1] != "]":
                    b, self.i = _unescape(self.text, self.i + 1)
                ranges.append((ord(a), ord(b)))
            assert self.text[self.i:self.i + 2] == "]/"
            self.i += 2
            return _Node("cls", ranges)
        name = re.match(r"[a-zA-Z0-9_]+", self.text[self.i:])
        assert name, f"unexpected {self.text[self.i:]!r}"
        self.i += len(name.group())
        return _Node("ref", name.group())


def _parse(grammar: str) -> dict[str, _Node]:
    lines = grammar.strip().splitlines()
    assert lines[0] == "%llguidance {}"
    rules = {}
    for line in lines[1:]:
        name, _, body = line.partition(": ")
        assert re.fullmatch(r"[a-z][a-z0-9_]*|[A-Z][A-Z0-9_]*", name), name
        reader = _Reader(body)
        rules[name] = reader.alt()
        assert reader.i == len(body), f"rule {name} not read to its end"
    for name, rule in rules.items():
        refs = [n.value for n in _nodes(rule) if n.kind == "ref"]
        assert all(r in rules for r in refs), name
        if name.isupper():  # a terminal is built from terminals only
            assert all(r.isupper() for r in refs), name
    return rules


def _nodes(node: _Node) -> list[_Node]:
    return [node, *(n for k in node.kids for n in _nodes(k))]


class _Lark:
    def __init__(self, grammar: str) -> None:
        self.rules = _parse(grammar)
        self.memo: dict[str, int] = {}

    def longest(self, node: _Node | None = None) -> int:
        node = node or self.rules["start"]
        if node.kind == "lit":
            return len(node.value.encode())
        if node.kind == "cls":
            return max(len(chr(b).encode("utf-8", "surrogatepass")) for _, b in node.value)
        if node.kind == "ref":
            if node.value not in self.memo:
                self.memo[node.value] = self.longest(self.rules[node.value])
            return self.memo[node.value]
        if node.kind == "alt":
            return max(self.longest(k) for k in node.kids)
        if node.kind == "seq":
            return sum(self.longest(k) for k in node.kids)
        return node.most * self.longest(node.kids[0])

    def sample(self, rng: random.Random, node: _Node | None = None) -> str:
        node = node or self.rules["start"]
        if node.kind == "lit":
            return str(node.value)
        if node.kind == "cls":
            a, b = rng.choice(node.value)
            return chr(rng.randint(a, b))
        if node.kind == "ref":
            return self.sample(rng, self.rules[node.value])
        if node.kind == "alt":
            return self.sample(rng, rng.choice(node.kids))
        if node.kind == "seq":
            return "".join(self.sample(rng, k) for k in node.kids)
        n = rng.choice([node.least, node.most, rng.randint(node.least, node.most)])
        return "".join(self.sample(rng, node.kids[0]) for _ in range(n))


def _outside_strings(text: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)


def _check(schema: dict[str, Any], limits: Limits, samples: int = 200) -> int:
    """The grammar's claimed bound is its longest sentence, and its sentences are compact valid JSON."""
    grammar = json_grammar(schema, limits)
    g = _Lark(grammar.text)
    assert g.longest() == grammar.max_bytes
    rng = random.Random(7)
    for _ in range(samples):
        text = g.sample(rng)
        assert len(text.encode()) <= grammar.max_bytes
        jsonschema.validate(json.loads(text), schema)
        structure = _outside_strings(text)
        assert not re.search(r"[\t\n\r]|(?<![,:]) |  ", structure), text
    return grammar.max_bytes


# --------------------------------------------------------------------------- the grammar builder


class Verdict(BaseModel):
    summary: str
    confidence: float


class Place(BaseModel):
    city: str
    country: str | None = None


class Trip(BaseModel):
    destination: Place
    days: int
    tags: list[str]
    rating: float = 0.5


SCHEMAS: list[dict[str, Any]] = [
    Verdict.model_json_schema(),
    Trip.model_json_schema(),
    {"type": "object"},
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 2, "maxLength": 5},
                                      "b": {"enum": ["x", "y", 3]}, "c": {"type": ["integer", "null"]},
                                      "d": {"type": "number", "minimum": 0, "maximum": 1},
                                      "e": {"type": "integer", "exclusiveMinimum": 0},
                                      "f": {"type": "number", "exclusiveMinimum": 0},
                                      "g": {"type": "array", "items": {"type": "boolean"}, "minItems": 1},
                                      "h": {"type": "object", "additionalProperties": {"type": "integer"}},
                                      "i": {"const": {"k": [1, "ż"]}}, "j": {}},
     "required": ["a", "g"], "additionalProperties": False},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=["verdict", "trip", "json_object", "keywords"])
def test_grammar_is_bounded_and_its_sentences_validate(schema: dict[str, Any]) -> None:
    _check(schema, Limits(string_bytes=12, items=3))
    _check(schema, Limits(string_bytes=0, items=0, depth=0, optional=False), samples=50)


def test_every_string_has_a_bound_and_max_length_is_honoured() -> None:
    plain = json_grammar({"type": "string"}, Limits(string_bytes=50, items=8))
    assert plain.max_bytes == 52 and 'STR_0_50: "\\"" B50 "\\""' in plain.text
    # maxLength in characters, where even ten 4-byte characters fit the limit...
    short = json_grammar({"type": "string", "maxLength": 10}, Limits(string_bytes=50, items=8))
    assert short.max_bytes == 2 + 4 * 10 and "CHAR{0,10}" in short.text
    g = _Lark(short.text)
    rng = random.Random(1)
    assert max(len(json.loads(g.sample(rng))) for _ in range(200)) == 10
    # ... else in bytes (a tighter limit), so that the bound still holds.
    assert json_grammar({"type": "string", "maxLength": 10}, Limits(string_bytes=20, items=8)).max_bytes == 12
    # Within the budget a schema's maxLength stays as it is, however large the configured limit.
    fitted = fitted_grammar({"type": "string", "maxLength": 10}, 512, JsonLimits(string_bytes=200))
    assert fitted.max_bytes == 42
    # Exactly ten characters of any width.
    g = _Lark(json_grammar({"type": "string", "minLength": 10, "maxLength": 10}, Limits(20, 8)).text)
    assert all(len(json.loads(g.sample(rng))) == 10 for _ in range(50))


def test_whitespace_is_one_optional_space_after_commas_and_colons() -> None:
    text = json_grammar(SCHEMAS[3], Limits(20, 3)).text
    assert '"," " "?' in text and '":" " "?' in text
    # Whitespace is only ever that optional space or a string's character (`C1`): nothing else holds any.
    for name, rule in _parse(text).items():
        if name == "C1":
            continue
        for node in _nodes(rule):
            if node.kind == "lit":
                assert node.value == " " or not re.search(r"\s", node.value), (name, node.value)
            if node.kind == "rep" and node.kids[0].kind == "lit" and node.kids[0].value == " ":
                assert node.most == 1, name
            if node.kind == "cls":
                assert not any(a <= ord(w) <= b for a, b in node.value for w in " \t\n\r"), name


def test_numbers_and_arrays_are_bounded() -> None:
    number = json_grammar({"type": "number"}, Limits(10, 4))
    assert number.max_bytes == 1 + 15 + 1 + 9  # sign, integral digits, point, fraction digits
    array = json_grammar({"type": "array", "items": {"type": "integer"}}, Limits(10, 4))
    assert array.max_bytes == 2 + 4 * 16 + 3 * 2
    capped = json_grammar({"type": "array", "items": {"type": "integer"}, "maxItems": 2}, Limits(10, 4))
    assert capped.max_bytes == 2 + 2 * 16 + 2


@pytest.mark.parametrize("max_tokens", [24, 40, 64, 100, 200, 512, 2048])
@pytest.mark.parametrize("schema", SCHEMAS, ids=["verdict", "trip", "json_object", "keywords"])
def test_the_fitted_grammar_closes_within_max_tokens(schema: dict[str, Any], max_tokens: int) -> None:
    limits = JsonLimits(string_bytes=200, items=8)
    g = fitted_grammar(schema, max_tokens, limits)
    if max_tokens >= 64:
        assert g.max_bytes <= max_tokens - 1  # the end-of-generation token still fits
    if g.max_bytes > max_tokens - 1:
        # Nothing fits (the required keys alone are too long): the configured limits, unchanged.
        assert g == json_grammar(schema, Limits(limits.string_bytes, limits.items, FREE_DEPTH))
    else:
        # The loosest that fits: a larger budget never gets a tighter grammar.
        assert g.max_bytes <= fitted_grammar(schema, max_tokens * 2, limits).max_bytes


def test_a_forced_call_fits_a_budget_its_fixed_keys_leave_room_in() -> None:
    tool = {"type": "object", "required": ["name", "arguments"],
            "properties": {"name": {"const": "final_result"}, "arguments": Verdict.model_json_schema()}}
    assert fitted_grammar(tool, 96, JsonLimits()).max_bytes <= 95
    assert fitted_grammar(tool, 512, JsonLimits()).max_bytes <= 511


def test_a_large_budget_keeps_the_configured_limits() -> None:
    limits = JsonLimits(string_bytes=120, items=5)
    g = fitted_grammar({"type": "array", "items": {"type": "string"}}, 4096, limits)
    assert g.max_bytes == 2 + 5 * 122 + 4 * 2


def test_schemas_outside_the_subset_go_to_llama_cpp_with_bounds() -> None:
    for schema in ({"type": "string", "format": "date-time"}, {"oneOf": [{"type": "string"}]},
                   {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"},
                   {"type": "number", "multipleOf": 0.5}, {"type": "number", "minimum": 0.5}):
        with pytest.raises(UnsupportedSchemaError):
            json_grammar(schema, Limits(10, 2))
    out = compact_schema({"type": "object", "properties": {"a": {"type": "string"}, "d": {"type": "string",
                          "format": "date"}, "l": {"type": "array", "items": {"type": "integer"}}}},
                         JsonLimits(string_bytes=30, items=4))
    assert out["x-guidance"]["whitespace_flexible"] is False
    assert out["properties"]["a"]["maxLength"] == 30 and "maxLength" not in out["properties"]["d"]
    assert out["properties"]["l"]["maxItems"] == 4


# --------------------------------------------------------------------------- the real model

SEEDS = range(12)


@pytest.mark.slow
async def test_structured_output_is_valid_for_every_seed(llm_url: str, model_id: str) -> None:
    """The output tool (str + float) at the default `max_tokens` (512) and temperature (1.0): with
    unbounded strings and whitespace the 135M model ran out of tokens in some of these seeds."""
    pytest.importorskip("pydantic_ai", reason="pydantic-ai is in the `agent` extra")
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.settings import ModelSettings

    model = OpenAIChatModel(model_id, provider=OpenAIProvider(base_url=llm_url + "/v1", api_key="unused"))
    for seed in SEEDS:
        agent = Agent(model, output_type=Verdict, model_settings=ModelSettings(seed=seed))
        result = await agent.run("Is the kitchen light on? Give a short summary and your confidence.")
        assert isinstance(result.output, Verdict), seed
        assert result.usage.output_tokens <= 512


RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "confidence": {"type": "number"},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["summary", "confidence", "tags"], "additionalProperties": False,
}


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_response_format_json_schema_closes_within_a_small_budget(llm_url: str, model_id: str,
                                                                  temperature: float) -> None:
    client = openai.OpenAI(base_url=llm_url + "/v1", api_key="unused", max_retries=0)
    for seed in range(8):
        r = client.chat.completions.create(
            model=model_id, max_tokens=64, temperature=temperature, seed=seed,
            messages=[{"role": "user", "content": "Describe the weather in detail, with many tags."}],
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": RESPONSE_SCHEMA}})
        choice = r.choices[0]
        assert choice.finish_reason == "stop", (seed, choice.message.content)
        assert r.usage is not None and r.usage.completion_tokens <= 64
        jsonschema.validate(json.loads(choice.message.content or ""), RESPONSE_SCHEMA)


@pytest.mark.slow
def test_forced_call_and_json_object_close_at_a_high_temperature(llm_url: str, model_id: str) -> None:
    client = openai.OpenAI(base_url=llm_url + "/v1", api_key="unused", max_retries=0)
    tool: Any = {"type": "function", "function": {"name": "final_result", "parameters": Verdict.model_json_schema()}}
    forced: Any = {"type": "function", "function": {"name": "final_result"}}
    for seed in range(6):
        # 96 tokens: what the call's fixed keys and name leave room for (see the unit test above).
        r = client.chat.completions.create(
            model=model_id, max_tokens=96, temperature=2.0, seed=seed, tools=[tool], tool_choice=forced,
            messages=[{"role": "user", "content": "Is the kitchen light on?"}])
        call: Any = r.choices[0].message.tool_calls
        assert r.choices[0].finish_reason == "tool_calls" and call, seed
        Verdict.model_validate_json(call[0].function.arguments)
        r = client.chat.completions.create(
            model=model_id, max_tokens=32, temperature=2.0, seed=seed, response_format={"type": "json_object"},
            messages=[{"role": "user", "content": "Some JSON, please."}])
        assert r.choices[0].finish_reason == "stop"
        assert isinstance(json.loads(r.choices[0].message.content or ""), dict)
