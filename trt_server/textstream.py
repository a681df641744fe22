"""Streaming text helpers: incremental detokenization and stop strings.

Detokenizing one token at a time is wrong for SentencePiece (a leading space belongs to the pair) and
for byte-level BPE (a character can span tokens). `IncrementalDetokenizer` decodes a short window of
ids and emits only the text that is stable, the method vLLM and TGI use. `StopMatcher` holds back only
the tail that could still become a stop string, so text flows without delay otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class _Decoder(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


class IncrementalDetokenizer:
    """Turns a stream of token ids into text deltas that never split a character."""

    def __init__(self, tokenizer: _Decoder, prompt_ids: Sequence[int] = (), context: int = 5) -> None:
        self._tok = tokenizer
        # A few prompt tokens give the first generated token its proper leading space.
        self._ids: list[int] = list(prompt_ids[-context:]) if context else []
        self._prefix = 0
        self._read = len(self._ids)

    def add(self, new_ids: Sequence[int]) -> str:
        if not new_ids:
            return ""
        self._ids.extend(new_ids)
        prefix_text = self._tok.decode(self._ids[self._prefix:self._read])
        full_text = self._tok.decode(self._ids[self._prefix:])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            delta = full_text[len(prefix_text):]
            self._prefix, self._read = self._read, len(self._ids)
            return delta
        return ""

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end is emitted as is)."""
        if self._read >= len(self._ids):
            return ""
        prefix_text = self._tok.decode(self._ids[self._prefix:self._read])
        full_text = self._tok.decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return full_text[len(prefix_text):]


class StopMatcher:
    """Finds stop strings across deltas; returns text safe to emit and whether a stop matched."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._buf = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self._stops:
            return text
        if self.stopped:
            return ""
        self._buf += text
        cut = min((i for i in (self._buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._buf = self._buf[:cut], ""
            return out
        # Hold back only a tail that is a prefix of some stop string.
        keep = 0
        for n in range(min(self._hold, len(self._buf)), 0, -1):
            tail = self._buf[-n:]
            if any(s.startswith(tail) for s in self._stops):
                keep = n
                break
        out = self._buf[: len(self._buf) - keep]
        self._buf = self._buf[len(self._buf) - keep:]
        return out

    def flush(self) -> str:
        out, self._buf = ("" if self.stopped else self._buf), ""
        return out
