"""`watus chat`, the README's main job for now: against a running server, and starting its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, free_port

WATUS = [sys.executable, "-m", "watus.cli"]


def test_chat_once_against_running_server(llm_url: str) -> None:
    r = subprocess.run([*WATUS, "chat", "--url", llm_url, "--no-start", "-p", "Say hello.", "--max-tokens", "12"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_chat_starts_and_stops_its_own_server(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "WATUS_LLM_PORT": str(port), "WATUS_LLM_WARMUP": "false"}
    env.pop("WATUS_AGENT_LLM_URL", None)  # the agent finds the server from WATUS_LLM_PORT
    r = subprocess.run([*WATUS, "chat", "-p", "Hi!", "--max-tokens", "8", "--log-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "ready" in (tmp_path / "llm.log").read_text()
    # The server it started is gone again.
    import httpx

    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        raise AssertionError("server still running")
    except httpx.ConnectError:
        pass


def test_chat_without_server_and_no_start_says_what_to_do(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = subprocess.run([*WATUS, "chat", "--url", url, "--no-start", "-p", "x"], capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert r.returncode == 2
    assert "python -m trt_server" in r.stderr


def test_server_with_missing_model_exits_with_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "WATUS_LLM_MODEL_PATH": str(tmp_path / "nope.gguf"), "WATUS_LLM_PORT": str(free_port())}
    r = subprocess.run([sys.executable, "-m", "trt_server"], capture_output=True, text=True, timeout=30,
                       cwd=ROOT, env=env)
    assert r.returncode == 2
    assert "WATUS_LLM_MODEL_PATH" in r.stderr and "Traceback" not in r.stderr
