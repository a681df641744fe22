"""Parsing model output into OpenAI tool calls, whole or streamed in pieces.

Formats: Hermes/Qwen `<tool_call>{"name": ..., "arguments": ...}</tool_call>` (any number, with text
around them), Llama-3 JSON (`{"name": ..., "parameters": ...}`, optionally after `<|python_tag|>`,
several separated by `;`, or a JSON list), Mistral `[TOOL_CALLS][...]`, and the bare JSON object that
grammar-forced decoding produces. The streaming parser lets plain text through at once and holds back
only what may be the start of a call, so a spoken reply is never delayed by tool support.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"
_JSON_PREFIXES = ("{", "[", "<|python_tag|>", "[TOOL_CALLS]")


@dataclass
class ParsedToolCall:
    name: str
    arguments: str  # a JSON object, serialised, as OpenAI sends it
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12))


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

    def __init__(self, *, json_only: bool = False) -> None:
        #: json_only: grammar-forced output, the whole text is a call.
        self._json_only = json_only
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
        """End of output: whatever is held back becomes a call if it parses, else content."""
        event = StreamEvent()
        buf, self._buf = self._buf, ""
        if not buf:
            return event
        if self._mode in ("json", "start"):
            calls = _calls_from_json_text(buf)
            if calls:
                self.calls.extend(calls)
                event.tool_calls.extend(calls)
            else:
                event.content = buf
        elif self._mode == "call":
            calls = _calls_from_json_text(buf[len(TOOL_OPEN):])
            if calls:
                self.calls.extend(calls)
                event.tool_calls.extend(calls)
            else:
                event.content = buf
        else:
            event.content = buf
        return event
