"""The LLM server's memory does not grow with the number of distinct prompts it has seen.

llama.cpp keeps earlier prompts' states in a host-memory cache (`cache_ram_mib`, 8 GiB by default): over a
30-minute soak the server grew by ~9 MB a turn. The server sets it from `WATUS_LLM_PROMPT_CACHE_MIB`
(default 0); here a real server answers many distinct prompts and its resident memory stays flat.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import free_port, service_process

pytestmark = pytest.mark.slow


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_distinct_prompts_do_not_grow_the_server(tmp_path: Path) -> None:
    port = free_port()
    with service_process("trt_server", {"WATUS_LLM_PORT": str(port), "WATUS_LLM_API_KEY": ""}, port,
                         tmp_path / "llm.log") as (url, proc), httpx.Client(base_url=url, timeout=120) as http:
        def ask(i: int) -> None:
            # ~300 tokens each, different from the first token on: nothing is shared between them.
            text = f"Request {i}: " + " ".join(f"word{i}x{j}" for j in range(120))
            r = http.post("/v1/chat/completions", json={"model": "default", "max_tokens": 1,
                                                        "messages": [{"role": "user", "content": text}]})
            assert r.status_code == 200, r.text

        for i in range(3):  # warm: buffers, the first allocations
            ask(i)
        before = _rss_mb(proc.pid)
        for i in range(3, 13):
            ask(i)
        after = _rss_mb(proc.pid)
    # With llama.cpp's default cache these 10 prompts add ~150 MB (16 added 249 MB); without it, allocator noise.
    assert after - before < 50, (before, after)
