"""Token log-probabilities: kept in step with the text actually sent, and written in OpenAI's shapes.

A stop string cuts the text in the middle of the generated tokens, and the stop matcher holds back
text that may still become one, so each token's log-probability waits in a `TokenQueue` until the text
it spelled has been sent; what a stop string cut off is never reported. Tokens are matched to text by
bytes, not characters: a character split over two tokens (byte-level BPE) would shift a count by
characters.

Shapes: chat (`choices[].logprobs.content[]` with `token`, `logprob`, `bytes`, `top_logprobs`) and the
legacy completions format (`tokens`, `token_logprobs`, `top_logprobs` as dicts, `text_offset`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from trt_server.engines.base import TokenLogprob


class _Decoder(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


def with_text(entries: list[TokenLogprob], tokenizer: _Decoder) -> list[TokenLogprob]:
    """Fill in the text of tokens an engine gave as ids only (llama.cpp gives text, TensorRT-LLM ids)."""

    def one(e: TokenLogprob) -> TokenLogprob:
        if e.token is not None and not e.top:
            return e
        token = e.token if e.token is not None else tokenizer.decode([e.token_id])
        return replace(e, token=token, top=tuple(one(t) for t in e.top))

    if all(e.token is not None and all(t.token is not None for t in e.top) for e in entries):
        return entries
    return [one(e) for e in entries]


def _size(e: TokenLogprob) -> int:
    return len(e.token_bytes) if e.token_bytes is not None else len((e.token or "").encode())


class TokenQueue:
    """Token log-probabilities waiting for their text to be sent."""

    def __init__(self) -> None:
        self._pending: deque[tuple[int, int, TokenLogprob]] = deque()  # (first byte, end byte, entry)
        self._generated = 0
        self._sent = 0

    def add(self, entries: list[TokenLogprob]) -> None:
        for e in entries:
            start = self._generated
            self._generated += _size(e)
            self._pending.append((start, self._generated, e))

    def sent(self, text: str) -> list[TokenLogprob]:
        """`text` went out: the tokens it completes."""
        self._sent += len(text.encode())
        out = []
        while self._pending and self._pending[0][1] <= self._sent:
            out.append(self._pending.popleft()[2])
        return out

    def finish(self, *, cut: bool) -> list[TokenLogprob]:
        """End of output. Cut by a stop string: only tokens whose text began before the cut remain."""
        rest = [e for start, _, e in self._pending if not cut or start < self._sent]
        self._pending.clear()
        return rest


# --------------------------------------------------------------------------- OpenAI shapes


def _chat_entry(e: TokenLogprob) -> dict[str, Any]:
    raw = e.token_bytes if e.token_bytes is not None else (e.token or "").encode()
    return {"token": e.token or "", "logprob": e.logprob, "bytes": list(raw)}


def chat_content(entries: Sequence[TokenLogprob], top: int) -> list[dict[str, Any]]:
    """`logprobs.content` of a chat choice: each token with its `top` most likely alternatives."""
    return [{**_chat_entry(e), "top_logprobs": [_chat_entry(t) for t in e.top[:top]]} for e in entries]


def chat_logprobs(entries: Sequence[TokenLogprob], top: int) -> dict[str, Any]:
    return {"content": chat_content(entries, top), "refusal": None}


class LegacyLogprobs:
    """The legacy completions `logprobs` object of one choice, built piece by piece as text is sent."""

    def __init__(self, top: int, offset: int = 0) -> None:
        self._top = top
        #: Character offset of the next token in the choice's text (which starts with the echo).
        self._offset = offset

    def block(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        tokens, offsets = [], []
        for e in entries:
            tokens.append(e.token or "")
            offsets.append(self._offset)
            self._offset += len(e.token or "")
        return {
            "tokens": tokens,
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t.token or "": t.logprob for t in e.top[:self._top]} for e in entries],
            "text_offset": offsets,
        }
