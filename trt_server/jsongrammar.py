"""JSON schema -> a grammar whose longest sentence has a known length, in llguidance's Lark syntax.

Everything the grammar admits is bounded, so `Grammar.max_bytes` is exact: no whitespace but one
optional space after `,` and `:`; strings of at most `Limits.string_bytes` UTF-8 bytes, or a schema's
`maxLength` in characters where even 4-byte characters fit in that (else `maxLength` bytes: a string
of n bytes has at most n characters); numbers of bounded digits (`jsonnumbers`, `Limits.digits`);
arrays, maps and free-form values bounded by `Limits.items` and `Limits.depth`. Every token a model
emits under the grammar carries at least one byte, so `max_bytes` also bounds the tokens (`jsonbudget`
fits the limits to a request's `max_tokens`).

The grammar admits a subset of what the schema allows (every output validates), covering what pydantic
writes for models: objects with `properties` (in schema order, optional ones optional), `$ref`s into
the schema (not recursive), `anyOf`, `enum`/`const`, type lists, strings with length bounds, numbers
with simple ranges, arrays with `items`, maps, and untyped (free-form) values. Anything else raises
`UnsupportedSchemaError`, and the engine's own converter takes the whole schema.

The syntax is llguidance's (llama.cpp's fast grammar engine, used for a grammar that starts with
`%llguidance`): llama.cpp's GBNF sampler, given the same grammar, decoded the 135M model 13 times
slower (5 vs 65 tokens/s). llguidance ignores a grammar it cannot read (the output is then
unconstrained), so only a few constructs are written (literals, one-class regexes, terminals built
from them, `|`, `?`, `{m,n}`), and tests/test_llm_json_bounded.py reads every grammar back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trt_server.jsonnumbers import Digits, number_expr
from trt_server.schemas import resolve_pointer


class UnsupportedSchemaError(ValueError):
    """The schema uses something this converter does not turn into a bounded grammar."""


@dataclass(frozen=True)
class Limits:
    #: Longest string, in UTF-8 bytes (a schema's smaller `maxLength` wins).
    string_bytes: int
    #: Most items of an array and entries of a map (a schema's smaller `maxItems`/`maxProperties` wins).
    items: int
    #: Containers that may nest inside a value the schema leaves free (`{}`, `{"type": "object"}`).
    depth: int = 1
    #: Whether optional properties may be written (off: only the required ones).
    optional: bool = True
    digits: Digits = field(default_factory=Digits)


@dataclass(frozen=True)
class Grammar:
    text: str
    #: The longest sentence of the grammar, in UTF-8 bytes.
    max_bytes: int


#: Keywords that do not constrain a value.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment",
                          "deprecated", "readOnly", "writeOnly", "$defs", "definitions"})
_RANGE = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
#: What each type may carry here besides `type`.
_KEYWORDS: dict[str, frozenset[str]] = {
    "string": frozenset({"minLength", "maxLength"}),
    "number": _RANGE,
    "integer": _RANGE,
    "boolean": frozenset(),
    "null": frozenset(),
    "object": frozenset({"properties", "required", "additionalProperties", "minProperties", "maxProperties"}),
    "array": frozenset({"items", "minItems", "maxItems", "uniqueItems"}),
}

#: A JSON string's characters by UTF-8 length: printable ASCII but `"` and `\`; two-byte escapes
#: (`\uXXXX` is left out: six bytes for what can be written directly) and U+0080..U+07FF; the rest.
_CHAR_TERMINALS: dict[str, str] = {
    "C1": r"/[\x20\x21\x23-\x5B\x5D-\x7E]/",
    "C2": r'"\\" /["\\\/bfnrt]/ | /[\u0080-\u07FF]/',
    "C3": r"/[\u0800-\uD7FF\uE000-\uFFFF]/",
    "C4": r"/[\U00010000-\U0010FFFF]/",
    "CHAR": "C1 | C2 | C3 | C4",
}
#: Between items and after a key: the one space allowed.
_SEP = ('"," " "?', 2)
_COLON = ('":" " "?', 2)

Expr = tuple[str, int]


def literal(text: str) -> Expr:
    """A string literal matching exactly `text` (JSON text: no control characters), and its bytes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"', len(text.encode())


def _alts(exprs: list[Expr]) -> Expr:
    if len(exprs) == 1:
        return exprs[0]
    return "( " + " | ".join(e for e, _ in exprs) + " )", max(n for _, n in exprs)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class _Builder:
    def __init__(self, root: Any, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        #: Rules (lower case) and terminals (upper case): a terminal is one lexeme, built from terminals.
        self.rules: dict[str, str] = dict(_CHAR_TERMINALS)
        self.sizes: dict[str, int] = {}
        self.refs: dict[str, Expr] = {}
        self.resolving: set[str] = set()

    def rule(self, name: str, make: Callable[[], Expr]) -> Expr:
        """A named rule built once; the reference and its size."""
        if name not in self.sizes:
            body, size = make()
            self.rules[name], self.sizes[name] = body, size
        return name, self.sizes[name]

    def new_rule(self, prefix: str, expr: Expr) -> Expr:
        return self.rule(f"{prefix}{len(self.sizes)}", lambda: expr)

    # ------------------------------------------------------------------ dispatch

    def value(self, schema: Any) -> Expr:
        if schema is True:
            return self.free(self.limits.depth)
        if not isinstance(schema, dict):
            raise UnsupportedSchemaError("a schema that admits nothing (false)")
        keys = set(schema) - _ANNOTATIONS
        if "$ref" in keys:
            if keys != {"$ref"}:
                raise UnsupportedSchemaError("keywords beside $ref")
            return self.ref(schema["$ref"])
        if "allOf" in keys:
            if keys != {"allOf"} or len(schema["allOf"]) != 1:
                raise UnsupportedSchemaError("allOf")
            return self.value(schema["allOf"][0])
        if "anyOf" in keys:
            if keys != {"anyOf"} or not schema["anyOf"]:
                raise UnsupportedSchemaError("keywords beside anyOf")
            return _alts([self.value(s) for s in schema["anyOf"]])
        if "const" in keys or "enum" in keys:
            return self.constants(schema, keys)
        types = self.types(schema, keys)
        if types is None:
            return self.free(self.limits.depth)
        allowed = frozenset({"type"}).union(*(_KEYWORDS[t] for t in types))
        if keys - allowed:
            raise UnsupportedSchemaError(f"keywords {sorted(keys - allowed)}")
        return _alts([self.typed(t, schema) for t in types])

    def types(self, schema: dict[str, Any], keys: set[str]) -> list[str] | None:
        """The schema's types (inferred from its keywords without `type`); None: any value."""
        t = schema.get("type")
        if t is None:
            unknown = keys.difference(*_KEYWORDS.values())
            if unknown:
                raise UnsupportedSchemaError(f"keywords {sorted(unknown)}")
            inferred = [name for name, kws in _KEYWORDS.items() if keys & kws and name != "integer"]
            if len(inferred) > 1:
                raise UnsupportedSchemaError("keywords of several types without `type`")
            return inferred or None
        types = [t] if isinstance(t, str) else list(t)
        if not types or any(x not in _KEYWORDS for x in types):
            raise UnsupportedSchemaError(f"type {t!r}")
        if "number" in types and "integer" in types:
            types.remove("integer")
        return types

    def typed(self, t: str, schema: dict[str, Any]) -> Expr:
        if t == "string":
            return self.string(int(schema.get("minLength", 0)), schema.get("maxLength"))
        if t in ("number", "integer"):
            found = number_expr(schema, t == "integer", self.limits.digits)
            if found is None:
                raise UnsupportedSchemaError("a numeric range")
            self.rules.update(self.limits.digits.terminals())
            return self.new_rule("NUM", found)
        if t == "boolean":
            return '( "true" | "false" )', 5
        if t == "null":
            return '"null"', 4
        return self.object(schema) if t == "object" else self.array(schema)

    def constants(self, schema: dict[str, Any], keys: set[str]) -> Expr:
        if keys - {"const", "enum", "type"}:
            raise UnsupportedSchemaError("keywords beside enum/const")
        values = [schema["const"]] if "const" in schema else list(schema.get("enum") or [])
        t = schema.get("type")
        if t is not None:
            types = {t} if isinstance(t, str) else set(t)
            values = [v for v in values
                      if _json_type(v) in types or (_json_type(v) == "integer" and "number" in types)]
        if not values:
            raise UnsupportedSchemaError("an enum that admits nothing")
        return _alts([literal(json.dumps(v, ensure_ascii=False, separators=(",", ":"))) for v in values])

    def ref(self, ref: Any) -> Expr:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise UnsupportedSchemaError(f"$ref {ref!r}")
        if ref in self.refs:
            return self.refs[ref]
        if ref in self.resolving:
            raise UnsupportedSchemaError("a recursive $ref")
        try:
            node = resolve_pointer(self.root, ref)
        except ValueError:
            raise UnsupportedSchemaError(f"$ref {ref!r} does not resolve") from None
        self.resolving.add(ref)
        self.refs[ref] = self.new_rule("ref", self.value(node))
        self.resolving.discard(ref)
        return self.refs[ref]

    # ------------------------------------------------------------------ strings

    def string(self, min_chars: int, max_length: Any) -> Expr:
        """A string of at least `min_chars` characters and at most the byte limit (`maxLength` tightens it).

        Where `maxLength` characters fit in the limit even at 4 bytes each, that is the bound. Otherwise
        the first `min_chars` characters may be of any width; the rest is a chain of terminals counting
        bytes down, so ASCII text gets every byte of the limit.
        """
        most = None if max_length is None else int(max_length)
        if most is not None and most < min_chars:
            raise UnsupportedSchemaError("maxLength below minLength")
        if most is not None and 4 * most <= self.limits.string_bytes:
            return self.rule(f"STR_{min_chars}_{most}C", lambda: (f'"\\"" CHAR{{{min_chars},{most}}} "\\""',
                                                                 2 + 4 * most))
        limit = self.limits.string_bytes if most is None else min(most, self.limits.string_bytes)
        tail = max(0, limit - 4 * min_chars)
        self.chain(tail)
        parts = ['"\\""'] + ([f"CHAR{{{min_chars}}}"] if min_chars else []) + ([f"B{tail}"] if tail else [])
        return self.rule(f"STR_{min_chars}_{tail}", lambda: (" ".join([*parts, '"\\""']),
                                                            2 + 4 * min_chars + tail))

    def chain(self, n: int) -> None:
        """Terminals `B1`..`Bn`: `Bk` is any string content of at most k bytes."""
        for k in range(1, n + 1):
            if f"B{k}" in self.sizes:
                continue
            alts = [f"C{w}" + (f" B{k - w}" if k > w else "") for w in range(1, 5) if w <= k]
            self.rules[f"B{k}"], self.sizes[f"B{k}"] = "( " + " | ".join(alts) + " )?", k

    # ------------------------------------------------------------------ containers

    def repeat(self, open_: str, close: str, item: Expr, least: int, most: int) -> Expr:
        """`open_ item ("," item)* close` with least..most items."""
        body, size = item
        if most == 0:
            return f'"{open_}" "{close}"', 2
        more = f' ( {_SEP[0]} {body} ){{{max(0, least - 1)},{most - 1}}}' if most > 1 else ""
        inner = f"{body}{more}"
        if least == 0:
            inner = f"( {inner} )?"
        return f'"{open_}" {inner} "{close}"', 2 + most * size + (most - 1) * _SEP[1]

    def count(self, schema: dict[str, Any], least_key: str, most_key: str) -> tuple[int, int]:
        least = int(schema.get(least_key, 0))
        most = min(int(schema.get(most_key, self.limits.items)), self.limits.items)
        return least, max(least, most)

    def array(self, schema: dict[str, Any]) -> Expr:
        items = schema.get("items", True)
        least, most = self.count(schema, "minItems", "maxItems")
        if schema.get("uniqueItems") is True and most > 1:
            raise UnsupportedSchemaError("uniqueItems")
        if items is False:
            most = 0
        if least > most:
            raise UnsupportedSchemaError("minItems above what the array admits")
        item = self.value(items) if most else ("", 0)
        return self.new_rule("arr", self.repeat("[", "]", item, least, most))

    def object(self, schema: dict[str, Any]) -> Expr:
        props = schema.get("properties")
        required = list(schema.get("required") or [])
        if props is None:
            if required:
                raise UnsupportedSchemaError("required keys without properties")
            values = schema.get("additionalProperties", True)
            least, most = self.count(schema, "minProperties", "maxProperties")
            if values is False:
                most = 0
            if least > most:
                raise UnsupportedSchemaError("minProperties above what the object admits")
            return self.new_rule("map", self.map(self.value(values) if most else ("", 0), least, most))
        if not isinstance(props, dict) or any(r not in props for r in required):
            raise UnsupportedSchemaError("required keys outside properties")
        if "minProperties" in schema or "maxProperties" in schema:
            raise UnsupportedSchemaError("min/maxProperties beside properties")
        # Extra properties are allowed unless `additionalProperties: false`; writing none stays valid.
        entries = [(name, sub, name in required) for name, sub in props.items()
                   if name in required or (sub is not False and self.limits.optional)]
        kvs = [self.entry(literal(json.dumps(name)), sub) for name, sub, _ in entries]
        needed = [req for _, _, req in entries]
        rest = self.sequence(kvs, needed, 0, first=True, tag=f"props{len(self.sizes)}")
        return self.new_rule("obj", (f'"{{" {rest[0]} "}}"' if rest[0] else '"{" "}"', 2 + rest[1]))

    def entry(self, key: Expr, sub: Any) -> Expr:
        value = self.value(sub)
        return f"{key[0]} {_COLON[0]} {value[0]}", key[1] + _COLON[1] + value[1]

    def sequence(self, kvs: list[Expr], needed: list[bool], i: int, first: bool, tag: str) -> Expr:
        """Entries i.. in order, the optional ones optional, commas only between written entries."""
        if i == len(kvs):
            return "", 0

        def make() -> Expr:
            rest = self.sequence(kvs, needed, i + 1, False, tag)
            sep = ("", 0) if first else _SEP
            body = " ".join(p for p in (sep[0], kvs[i][0], rest[0]) if p)
            size = sep[1] + kvs[i][1] + rest[1]
            if needed[i]:
                return body, size
            skip = self.sequence(kvs, needed, i + 1, first, tag)
            return (f"( {body} | {skip[0]} )" if skip[0] else f"( {body} )?"), max(size, skip[1])

        return self.rule(f"{tag}_{i}{'a' if first else 'b'}", make)

    def map(self, value: Expr, least: int, most: int) -> Expr:
        """An object of least..most entries with any keys and values of `value`."""
        if most == 0:
            return '"{" "}"', 2
        key = self.string(0, None)
        return self.repeat("{", "}", (f"{key[0]} {_COLON[0]} {value[0]}", key[1] + _COLON[1] + value[1]),
                           least, most)

    def free(self, depth: int) -> Expr:
        """Any JSON value, with containers nested at most `depth` deep."""

        def make() -> Expr:
            found = number_expr({}, False, self.limits.digits)
            assert found is not None
            self.rules.update(self.limits.digits.terminals())
            number = self.rule("NUMBER", lambda: found)
            alts = [self.string(0, None), number, ('( "true" | "false" | "null" )', 5)]
            if depth > 0:
                inner = self.free(depth - 1)
                alts.append(self.map(inner, 0, self.limits.items))
                alts.append(self.repeat("[", "]", inner, 0, self.limits.items))
            return _alts(alts)

        return self.rule(f"any{depth}", make)


def json_grammar(schema: dict[str, Any], limits: Limits) -> Grammar:
    """The bounded grammar of `schema` (UnsupportedSchemaError where it leaves the subset above)."""
    b = _Builder(schema, limits)
    root, size = b.value(schema)
    lines = ["%llguidance {}", f"start: {root}"] + [f"{name}: {body}" for name, body in b.rules.items()]
    return Grammar("\n".join(lines) + "\n", size)
