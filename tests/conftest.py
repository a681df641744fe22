"""Shared fixtures: one real LLM server process on the default model for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, run_service

# Piper without its sampling noise: a phrase is the same audio in every run (the people's voices the tests
# speak and the robot's own), so what whisper or the end-of-turn model makes of it does not vary by chance.
# Services the tests start inherit it.
os.environ.setdefault("WATUS_AUDIO_TTS_VARIATION", "false")


@pytest.fixture(scope="session")
def llm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of `python -m trt_server` with the bundled SmolLM2 (2 slots, a queue of 2)."""
    port = free_port()
    log: Path = tmp_path_factory.mktemp("llm") / "server.log"
    env = {"WATUS_LLM_PORT": str(port), "WATUS_LLM_MAX_CONCURRENT": "2", "WATUS_LLM_QUEUE_SIZE": "2",
           "WATUS_LLM_THREADS": "2", "WATUS_LLM_API_KEY": ""}
    with run_service("trt_server", env, port, log) as url:
        yield url


@pytest.fixture(scope="session")
def model_id(llm_url: str) -> str:
    import httpx

    return str(httpx.get(llm_url + "/v1/models").json()["data"][0]["id"])
