"""The JSON grammar of a request, fitted so that the JSON closes within the request's `max_tokens`.

Under a grammar every token carries at least one byte, so a grammar whose longest sentence is at most
`max_tokens - 1` bytes ends, end-of-generation token included, before the budget runs out. The fit
starts from the configured limits (`WATUS_LLM_JSON_MAX_STRING_BYTES`, `WATUS_LLM_JSON_MAX_ITEMS`, the
schema's own `maxLength`/`maxItems` where smaller) and walks a ladder of ever tighter limits: strings
down to `_STRING_FLOOR` bytes, then free-form nesting, then items down to one, then shorter numbers,
then optional properties left out, then strings down to nothing, then no items. The longest sentence
only shrinks down the ladder, so a binary search finds the loosest rung that fits.

Where even the last rung does not fit (a forced call's fixed keys and names alone can take more bytes
than a small `max_tokens`), nothing can be promised: the configured limits apply unchanged, with a
warning, since a model mostly writes several bytes a token and usually closes in time (`finish_reason`
`length` where it does not).

Schemas outside the bounded subset (`jsongrammar`) go to llama.cpp's own converter instead, as
`compact_schema`: whitespace as compact JSON and strings and arrays bounded by the same limits, but
no guarantee against `max_tokens` (its numbers, patterns and formats are unbounded).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Any

from trt_server.jsongrammar import Grammar, Limits, UnsupportedSchemaError, json_grammar
from trt_server.jsonnumbers import Digits

log = logging.getLogger(__name__)

#: Strings keep this many bytes while other limits are tightened first.
_STRING_FLOOR = 32
#: Containers nested inside free-form values (`{"type": "object"}`) before the fit tightens it.
FREE_DEPTH = 1
#: Numbers once the full 15 + 9 digits no longer fit.
_SHORT_DIGITS = Digits(integral=6, fraction=3)


@dataclass(frozen=True)
class JsonLimits:
    """The configured bounds where a schema says nothing (settings `json_max_*`)."""

    string_bytes: int = 200
    items: int = 8


def _ladder(limits: JsonLimits) -> list[Limits]:
    """Limits from the configured ones to the tightest, each rung tightening one of them by one step."""
    s, k = limits.string_bytes, limits.items
    floor, one = min(s, _STRING_FLOOR), min(k, 1)
    rungs = [Limits(b, k, FREE_DEPTH) for b in range(s, floor - 1, -1)]
    rungs += [Limits(floor, k, d) for d in range(FREE_DEPTH - 1, -1, -1)]
    rungs += [Limits(floor, n, 0) for n in range(k - 1, one - 1, -1)]
    short = _SHORT_DIGITS
    rungs += [Limits(floor, one, 0, digits=short), Limits(floor, one, 0, optional=False, digits=short)]
    rungs += [Limits(b, one, 0, optional=False, digits=short) for b in range(floor - 1, -1, -1)]
    if one:
        rungs += [Limits(0, 0, 0, optional=False, digits=short)]
    return rungs


def fitted_grammar(schema: dict[str, Any], max_tokens: int, limits: JsonLimits) -> Grammar:
    """The loosest bounded grammar of `schema` whose JSON ends within `max_tokens` tokens (where one does).

    Raises UnsupportedSchemaError where the schema is outside the bounded subset.
    """
    # Not sort_keys: the order of `properties` is the order the model writes them in.
    return _fitted(json.dumps(schema), max_tokens, limits)


@functools.lru_cache(maxsize=128)
def _fitted(schema_json: str, max_tokens: int, limits: JsonLimits) -> Grammar:
    schema = json.loads(schema_json)
    budget = max_tokens - 1  # the end-of-generation token after the JSON
    rungs = _ladder(limits)
    first = json_grammar(schema, rungs[0])
    if first.max_bytes <= budget:
        return first
    lo, hi = 1, len(rungs) - 1  # rungs[hi] is the answer unless one before it fits too
    best = json_grammar(schema, rungs[hi])
    if best.max_bytes > budget:
        # No grammar of this schema can promise it; empty strings would not make it likelier to fit.
        log.warning("JSON of this schema can take %d tokens even at the tightest limits, more than max_tokens=%d "
                    "holds: the configured limits apply and the reply may be cut", best.max_bytes + 1, max_tokens)
        return first
    while lo < hi:
        mid = (lo + hi) // 2
        g = json_grammar(schema, rungs[mid])
        if g.max_bytes <= budget:
            best, hi = g, mid
        else:
            lo = mid + 1
    return best


def json_constraint(schema: dict[str, Any], max_tokens: int, limits: JsonLimits) -> tuple[str, Any]:
    """What llama.cpp's completion request takes for `schema`: `("grammar", text)`, the fitted bounded
    grammar, or outside its subset `("json_schema", compact_schema(...))`."""
    return _constraint(json.dumps(schema), max_tokens, limits)


@functools.lru_cache(maxsize=128)
def _constraint(schema_json: str, max_tokens: int, limits: JsonLimits) -> tuple[str, Any]:
    try:
        return "grammar", _fitted(schema_json, max_tokens, limits).text
    except UnsupportedSchemaError as e:
        log.info("JSON schema outside the bounded grammar (%s): llama.cpp's converter takes it, with compact "
                 "whitespace but no promise against max_tokens", e)
        return "json_schema", compact_schema(json.loads(schema_json), limits)


def compact_schema(schema: dict[str, Any], limits: JsonLimits) -> dict[str, Any]:
    """`schema` for llama.cpp's llguidance converter: compact whitespace, bounded strings and arrays.

    Only plain strings get a `maxLength` (a `format` or `pattern` bounds its own); `x-guidance` is read
    at the top level only.
    """
    out = _bounded(schema, limits)
    guidance = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    return {**out, "x-guidance": {**guidance, **(out.get("x-guidance") or {})}} if isinstance(out, dict) else out


def _bounded(node: Any, limits: JsonLimits) -> Any:
    if isinstance(node, list):
        return [_bounded(n, limits) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in ("const", "enum", "default", "examples") else _bounded(v, limits)) for k, v in node.items()}
    types = out.get("type")
    types = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    if "string" in types and not {"maxLength", "format", "pattern", "enum", "const"} & out.keys():
        out["maxLength"] = max(limits.string_bytes, int(out.get("minLength", 0)))
    if "array" in types and "maxItems" not in out:
        out["maxItems"] = max(limits.items, int(out.get("minItems", 0)))
    return out


__all__ = ["FREE_DEPTH", "JsonLimits", "compact_schema", "fitted_grammar", "json_constraint"]
