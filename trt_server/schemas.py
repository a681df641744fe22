"""Checks that a JSON schema from a request can drive constrained decoding.

llama.cpp's llguidance backend accepts any schema when the grammar is built and fails only while
sampling, where the failure is silent (the output is unconstrained). So schemas are checked here,
before generation: valid against the JSON Schema meta-schema, and every `$ref` local and resolvable.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import jsonschema.exceptions


def resolve_pointer(root: Any, ref: str) -> Any:
    """The node a local `$ref` (`#/...`, JSON Pointer escapes) names in `root`; ValueError if none."""
    if not ref.startswith("#"):
        raise ValueError(f"$ref '{ref}' is not local to the schema (remote references are not fetched)")
    node = root
    for raw in [p for p in ref[1:].split("/") if p]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ValueError(f"$ref '{ref}' does not resolve inside the schema")
    return node


def _walk_refs(root: Any, node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            resolve_pointer(root, ref)
        for value in node.values():
            _walk_refs(root, value)
    elif isinstance(node, list):
        for value in node:
            _walk_refs(root, value)


def check_json_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError saying what is wrong if `schema` cannot be used for guided decoding."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise ValueError(f"invalid JSON schema at {where}: {e.message}") from e
    _walk_refs(schema, schema)
