"""Parsing model output into OpenAI tool calls, whole or streamed in pieces.

Formats: Hermes/Qwen `<tool_call>{"name": ..., "arguments": ...}</tool_call>` (any number, with text
around them), Llama-3 JSON (`{"name": ..., "parameters": ...}`, optionally after `<|python_tag|>`,
several separated by `;`, or a JSON list), Mistral `[TOOL_CALLS][...]`, and the bare JSON object that
grammar-forced decoding produces. The streaming parser lets plain text through at once and holds back
only what may be the start of a call, so a spoken reply is never delayed by tool support.

A call the output ends in the middle of (`max_tokens`, a stop string) is never passed off as content:
it becomes a call with the arguments written so far (`complete` False), as OpenAI returns one cut by
`max_tokens`. Only a forced call cut before its function name is known has no call to return: that is
`IncompleteToolCallError`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"
_JSON_PREFIXES = ("{", "[", "<|python_tag|>", "[TOOL_CALLS]")
# The start of a call object, as far as it got: its name (maybe unfinished) and whether it is closed.
_CALL_HEAD = re.compile(r'\s*(?:<\|python_tag\|>|\[TOOL_CALLS\])?\s*\[?\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)(")?')
_ARGS_KEY = re.compile(r'\s*,\s*"(?:arguments|parameters)"\s*:\s*')


class IncompleteToolCallError(ValueError):
    """A forced call ended before its function name was complete (too few `max_tokens`)."""


@dataclass
class ParsedToolCall:
    name: str
    arguments: str  # a JSON object, serialised, as OpenAI sends it (cut short where `complete` is False)
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12))
    #: False: the output ended inside this call; `arguments` is the JSON written so far.
    complete: bool = True


def partial_call(text: str, names: Sequence[str]) -> ParsedToolCall | None:
    """The call `text` ends in the middle of, or None if it does not start like a call object.

    Raises IncompleteToolCallError if the name is unfinished and more than one of `names` fits it.
    """
    head = _CALL_HEAD.match(text)
    if head is None:
        return None
    name = head.group(1)
    if head.group(2):
        try:
            name = json.loads(f'"{name}"')
        except json.JSONDecodeError:
            return None
    else:
        fits = [n for n in names if n.startswith(name)]
        if len(fits) != 1:
            raise IncompleteToolCallError(f"the output ended inside the function name ({name!r})")
        name = fits[0]
    rest = text[head.end():]
    args = _ARGS_KEY.match(rest) if head.group(2) else None
    return ParsedToolCall(name=name, arguments=rest[args.end():].rstrip() if args else "", complete=False)


def _call_from_obj(obj: Any) -> ParsedToolCall | None:
    if not isinstance(obj, dict):
        return None
    # {"type": "function", "function": {...}} wrappers appear in some fine-tunes' output.
    if "function" in obj and isinstance(obj["function"], dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedToolCall(name=name, arguments=json.dumps(args, ensure_ascii=False))


def _calls_from_json_text(text: str) -> list[ParsedToolCall] | None:
    """Llama-3 / Mistral / bare JSON: the whole text is one or more calls, else None."""
    s = text.strip()
    for tag in ("<|python_tag|>", "[TOOL_CALLS]"):
        if s.startswith(tag):
            s = s[len(tag):].strip()
    if not s or s[0] not in "{[":
        return None
    candidates: list[Any] = []
    try:
        parsed = json.loads(s)
        candidates = parsed if isinstance(parsed, list) else [parsed]
    except json.JSONDecodeError:
        # Llama 3.2 writes several calls separated by ';'.
        try:
            candidates = [json.loads(piece) for piece in s.split(";") if piece.strip()]
        except json.JSONDecodeError:
            return None
    calls = [_call_from_obj(c) for c in candidates]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def parse_tool_calls(text: str) -> tuple[str, list[ParsedToolCall]]:
    """Split a complete output into (content, tool calls). Unparseable markup stays content."""
    calls = _calls_from_json_text(text)
    if calls is not None:
        return "", calls
    content_parts: list[str] = []
    found: list[ParsedToolCall] = []
    rest = text
    while True:
        start = rest.find(TOOL_OPEN)
        if start < 0:
            content_parts.append(rest)
            break
        end = rest.find(TOOL_CLOSE, start)
        body = rest[start + len(TOOL_OPEN): end if end >= 0 else len(rest)]
        parsed = _calls_from_json_text(body)
        if parsed is None:
            content_parts.append(rest[: end + len(TOOL_CLOSE)] if end >= 0 else rest)
            if end < 0:
                break
            rest = rest[end + len(TOOL_CLOSE):]
            continue
        content_parts.append(rest[:start])
        found.extend(parsed)
        if end < 0:
            break
        rest = rest[end + len(TOOL_CLOSE):]
    return "".join(content_parts).strip() if found else text, found


def _partial_prefix_len(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


@dataclass
class StreamEvent:
    content: str = ""
    tool_calls: list[ParsedToolCall] = field(default_factory=list)


class StreamingToolParser:
    """Feed text deltas, get content to send now and tool calls as soon as each is complete."""

    def __init__(self, *, json_only: bool = False, names: Sequence[str] = ()) -> None:
        #: json_only: grammar-forced output, the whole text is a call.
        self._json_only = json_only
        #: The functions the model may call (to finish a name the output was cut inside).
        self._names = tuple(names)
        self._mode = "json" if json_only else "start"
        self._buf = ""
        self.calls: list[ParsedToolCall] = []

    def feed(self, delta: str) -> StreamEvent:
        self._buf += delta
        event = StreamEvent()
        if self._mode == "start":
            head = self._buf.lstrip()
            if not head:
                return event
            if any(head.startswith(p) or p.startswith(head) for p in _JSON_PREFIXES):
                if any(head.startswith(p) for p in _JSON_PREFIXES):
                    self._mode = "json"
                return event
            self._mode = "text"
        if self._mode == "json":
            return event
        self._scan(event)
        return event

    def _scan(self, event: StreamEvent) -> None:
        while True:
            if self._mode == "text":
                start = self._buf.find(TOOL_OPEN)
                if start < 0:
                    keep = _partial_prefix_len(self._buf, TOOL_OPEN)
                    event.content += self._buf[: len(self._buf) - keep]
                    self._buf = self._buf[len(self._buf) - keep:]
                    return
                event.content += self._buf[:start]
                self._buf = self._buf[start:]
                self._mode = "call"
            end = self._buf.find(TOOL_CLOSE)
            if end < 0:
                return
            body = self._buf[len(TOOL_OPEN): end]
            parsed = _calls_from_json_text(body)
            if parsed is None:
                event.content += self._buf[: end + len(TOOL_CLOSE)]
            else:
                self.calls.extend(parsed)
                event.tool_calls.extend(parsed)
            self._buf = self._buf[end + len(TOOL_CLOSE):]
            self._mode = "text"
            if self.calls:
                self._buf = self._buf.lstrip()

    def finish(self) -> StreamEvent:
        """End of output: whatever is held back becomes a call if it parses (or was cut), else content.

        Raises IncompleteToolCallError for a cut call whose function name is not known.
        """
        event = StreamEvent()
        buf, self._buf = self._buf, ""
        if self._mode in ("json", "start", "call") and (buf or self._json_only):
            body = buf[len(TOOL_OPEN):] if self._mode == "call" else buf
            calls = _calls_from_json_text(body)
            if not calls:
                cut = partial_call(body, self._names)
                if cut is None and self._json_only:
                    # Under the grammar the output is the start of a call, cut before its name.
                    if len(self._names) != 1:
                        raise IncompleteToolCallError("the output ended before the function name")
                    cut = ParsedToolCall(name=self._names[0], arguments="", complete=False)
                calls = [cut] if cut is not None else None
            if calls:
                self.calls.extend(calls)
                event.tool_calls.extend(calls)
            else:
                event.content = buf
        else:
            event.content = buf
        return event
