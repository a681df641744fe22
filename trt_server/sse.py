"""Server-sent events framing of the streamed replies: `data: <json>` events, errors, `data: [DONE]`.

A stream is validated and admitted before its first byte, so what can still go wrong is sent as an SSE
`error` event. Starlette's `StreamingResponse` listens for `http.disconnect` while it streams and
cancels the body iterator when the client goes away; the generation's slot is given back in
`sse_body`'s `finally` either way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from trt_server.errors import APIError
from trt_server.generation import Run

#: Where the text goes in a `TextEvents` template.
TEXT_SLOT = "\u0000watus-text\u0000"


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class TextEvents:
    """Encodes the per-token SSE events fast: the constant JSON around the text is serialised once.

    On a 2-core CPU the server's Python work per token competes with llama.cpp's threads, so the hot
    path does one `json.dumps` of a short string and two byte concatenations per token.
    """

    def __init__(self, template: dict[str, Any]) -> None:
        whole = sse(template)
        head, _, tail = whole.partition(json.dumps(TEXT_SLOT).encode())
        if not tail:
            raise ValueError("template has no text slot")
        self._head, self._tail = head, tail

    def encode(self, text: str) -> bytes:
        return self._head + json.dumps(text, ensure_ascii=False).encode() + self._tail


async def sse_body(run: Run, events: AsyncIterator[dict[str, Any] | bytes]) -> AsyncIterator[bytes]:
    """The response body of a streamed reply: its events, an error event if one comes, then [DONE]."""
    status = "ok"
    try:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for ev in events:
                yield ev if isinstance(ev, bytes) else sse(ev)
    except APIError as e:
        status = "error"
        yield sse(e.body())
    except BaseException:
        status = "cancelled"
        raise
    finally:
        run.release(status)
    yield b"data: [DONE]\n\n"


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})
