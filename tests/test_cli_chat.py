"""`watus chat`, the README's main job for now: against a running server, and starting its own.

The replies come from the real default model at temperature 0 (greedy), so one question asked twice
gets the same reply, and a token cap gives the start of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, free_port

WATUS = [sys.executable, "-m", "watus.cli"]
#: Deadlines for what a busy 2-core machine may take long to do; each wait returns as soon as it is done.
SLOW_S = 240.0


def _no_vision() -> dict[str, str]:
    # A port nothing listens on: the agent is told it cannot see, the same way in every call, even while
    # another test runs a vision service on the default port.
    return {**os.environ, "WATUS_AGENT_VISION_URL": f"http://127.0.0.1:{free_port()}", "COLUMNS": "200"}


def _ask(llm_url: str, prompt: str, *extra: str, env: dict[str, str]) -> str:
    r = subprocess.run([*WATUS, "chat", "--url", llm_url, "--no-start", "-p", prompt, "--temperature", "0", *extra],
                       capture_output=True, text=True, timeout=SLOW_S, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_chat_once_prints_the_agents_reply_capped_by_max_tokens(llm_url: str) -> None:
    env = _no_vision()
    question = "Count from one to thirty."
    full = _ask(llm_url, question, env=env)
    capped = _ask(llm_url, question, "--max-tokens", "8", env=env)
    # Only the reply is printed (no banner, no prompt) and ends the output with one newline.
    assert capped.endswith("\n") and capped.strip() and "Chatting with" not in capped and "watus>" not in capped
    # Greedy decoding (temperature 0): the 8-token reply is the start of the whole one, which is longer.
    assert len(capped.split()) <= 8, capped
    assert full.startswith(capped.rstrip("\n")), (capped, full)
    assert len(full.split()) > len(capped.split()), (capped, full)


def test_chat_loop_reads_lines_until_an_empty_one(llm_url: str) -> None:
    r = subprocess.run([*WATUS, "chat", "--url", llm_url, "--no-start", "--max-tokens", "8", "--temperature", "0"],
                       input="Say hello.\n\n", capture_output=True, text=True, timeout=SLOW_S, cwd=ROOT,
                       env={**_no_vision(), "WATUS_AGENT_ROBOT_NAME": "Robo"})
    assert r.returncode == 0, r.stderr
    banner, _, rest = r.stdout.partition("\n")
    assert banner == f"Chatting with Robo (LLM at {llm_url.rstrip('/')}) — empty line to quit.", r.stdout
    # One question, its reply after the agent's prompt, then the empty line ends the chat.
    assert rest.count("you> ") == 2 and rest.count("watus> ") == 1, r.stdout
    reply = rest.split("watus> ", 1)[1].split("you> ", 1)[0].strip()
    assert reply and len(reply.split()) <= 8, r.stdout


def test_chat_starts_and_stops_its_own_server(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "WATUS_LLM_PORT": str(port), "WATUS_LLM_WARMUP": "false"}
    env.pop("WATUS_AGENT_LLM_URL", None)  # the agent finds the server from WATUS_LLM_PORT
    r = subprocess.run([*WATUS, "chat", "-p", "Hi!", "--max-tokens", "8", "--log-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=SLOW_S, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    reply = r.stdout.strip()
    assert reply and len(reply.split()) <= 8, r.stdout  # the reply of the server it started, capped
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
                       timeout=SLOW_S, cwd=ROOT)
    assert r.returncode == 2
    assert "python -m trt_server" in r.stderr


def test_server_with_missing_model_exits_with_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "WATUS_LLM_MODEL_PATH": str(tmp_path / "nope.gguf"), "WATUS_LLM_PORT": str(free_port())}
    r = subprocess.run([sys.executable, "-m", "trt_server"], capture_output=True, text=True, timeout=SLOW_S,
                       cwd=ROOT, env=env)
    assert r.returncode == 2
    assert "WATUS_LLM_MODEL_PATH" in r.stderr and "Traceback" not in r.stderr


def test_a_bad_setting_on_the_command_line_is_one_line() -> None:
    r = subprocess.run([*WATUS, "chat", "--max-tokens", "4", "--no-start", "-p", "hi"], capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "max_tokens" in r.stderr and "Traceback" not in r.stderr, r.stderr
