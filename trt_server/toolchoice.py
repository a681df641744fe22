"""`tool_choice` and `response_format` of a chat request: the tools the model sees and the grammar.

A forced call (`required`, a named function, `allowed_tools` in required mode) or a JSON
`response_format` becomes a JSON schema that guided decoding enforces. Where the engine has no guided
decoding, the same demand goes into the system prompt instead, and the output is parsed as usual.

A tool's parameters sit inside the call schema (`properties.arguments`), so their local `$ref`s
(`#/$defs/...`, what pydantic writes for every nested model) are rewritten to point there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trt_server.protocol import AllowedToolsChoice, ChatCompletionRequest, NamedToolChoice, Tool


def closed_schema(schema: Any) -> Any:
    """A copy where objects that do not say otherwise allow no extra properties.

    JSON schema allows extra properties by default; under a grammar a small model then invents
    properties until it runs out of tokens. OpenAI's strict mode closes objects the same way.
    """
    if isinstance(schema, list):
        return [closed_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed_schema(v) for k, v in schema.items()}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


#: Keywords whose values are data, not schemas: a `$ref` key in them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
#: Keywords whose values map names (any names, `const` included) to schemas.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def rebased_refs(schema: Any, base: str) -> Any:
    """A copy of `schema` for embedding at JSON pointer `base` (e.g. `#/properties/arguments`).

    Local pointers (`#`, `#/...`) are relative to the schema's own root; embedded, they must start at
    `base`. Anchors (`#name`) and remote references are left alone (the schema check refuses them).
    """
    if isinstance(schema, list):
        return [rebased_refs(s, base) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str) and (value == "#" or value.startswith("#/")):
            out[key] = base + value[1:]
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: rebased_refs(sub, base) for name, sub in value.items()}
        elif key in _DATA_KEYWORDS:
            out[key] = value
        else:
            out[key] = rebased_refs(value, base)
    return out


def _tool_call_schema(tools: list[Tool]) -> dict[str, Any]:
    """JSON schema of one call to any of `tools`: `{"name": <const>, "arguments": <its parameters>}`."""

    def option(t: Tool, at: str) -> dict[str, Any]:
        params = closed_schema(t.function.parameters or {"type": "object"})
        return {"type": "object",
                "properties": {"name": {"const": t.function.name},
                               "arguments": rebased_refs(params, f"{at}/properties/arguments")},
                "required": ["name", "arguments"]}

    if len(tools) == 1:
        return option(tools[0], "#")
    return {"anyOf": [option(t, f"#/anyOf/{i}") for i, t in enumerate(tools)]}


@dataclass
class ChatPlan:
    tools: list[Tool]
    forced: bool
    schema: dict[str, Any] | None
    extra_system: str | None


def plan_tools(req: ChatCompletionRequest, grammar: bool) -> ChatPlan:
    """Which tools the model sees, whether a call is forced, and the grammar that forces it."""
    tools = list(req.tools or [])
    choice = req.tool_choice
    forced = False
    if choice == "none":
        tools = []
    elif choice == "required":
        forced = True
    elif isinstance(choice, NamedToolChoice):
        tools, forced = [t for t in tools if t.function.name == choice.function.name], True
    elif isinstance(choice, AllowedToolsChoice):
        allowed = {t.function.name for t in choice.allowed_tools.tools}
        tools = [t for t in tools if t.function.name in allowed]
        forced = choice.allowed_tools.mode == "required"
    schema: dict[str, Any] | None = None
    extra: str | None = None
    if forced:
        schema = _tool_call_schema(tools)
        if not grammar:
            extra = ("You must call exactly one of the functions now. Answer only with a JSON object "
                     '{"name": <function name>, "arguments": <arguments object>}.')
    elif req.response_format is not None and req.response_format.type != "text":
        rf = req.response_format
        given = rf.json_schema.schema_ if rf.type == "json_schema" and rf.json_schema else None
        schema = closed_schema(given) if given else {"type": "object"}
        if not grammar:
            extra = "Answer only with a JSON value matching this JSON schema: " + json.dumps(schema)
    return ChatPlan(tools=tools, forced=forced, schema=schema if grammar else None, extra_system=extra)
