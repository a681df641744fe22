"""`watus up` (start, restart a dead process, stop all on Ctrl-C), `watus status`, `watus doctor`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from audio.settings import AudioSettings
from tests.helpers import ROOT, free_port, wait_healthy

WATUS = [sys.executable, "-m", "watus.cli"]
#: Deadlines for what a busy 2-core machine may take long to do; each wait returns as soon as it is done.
SLOW_S = 90.0


def _children(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if "trt_server" in " ".join(p.cmdline())]


def test_up_restarts_a_dead_process_and_stops_all_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "WATUS_LLM_PORT": str(port), "WATUS_LLM_WARMUP": "false"}
    url = f"http://127.0.0.1:{port}"
    up = subprocess.Popen([*WATUS, "up", "--only", "llm", "--log-dir", str(tmp_path), "--max-restarts", "1"],
                          env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(url, timeout=SLOW_S)
        (child,) = _children(up.pid)
        status = subprocess.run([*WATUS, "status", "--only", "llm"], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=SLOW_S)
        assert status.returncode == 0 and "llm" in status.stdout and "ok" in status.stdout
        child.kill()
        child.wait(SLOW_S)
        deadline = time.monotonic() + SLOW_S
        while time.monotonic() < deadline:
            new = [c for c in _children(up.pid) if c.pid != child.pid]
            if new:
                break
            time.sleep(0.2)
        assert new, "the dead server was not restarted"
        wait_healthy(url, timeout=SLOW_S)
        up.send_signal(signal.SIGINT)
        out, errs = up.communicate(timeout=SLOW_S)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, errs
    assert "restart 1/1" in errs and "All stopped." in out
    assert (tmp_path / "llm.log").read_text().count("trt_server.app: model") == 2  # loaded twice
    try:
        httpx.get(url + "/health", timeout=1)
        raise AssertionError("still serving after Ctrl-C")
    except httpx.ConnectError:
        pass
    down = subprocess.run([*WATUS, "status", "--only", "llm"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=SLOW_S)
    assert down.returncode == 1 and "down" in down.stdout


def test_up_refuses_unknown_service() -> None:
    r = subprocess.run([*WATUS, "up", "--only", "radar"], cwd=ROOT, capture_output=True, text=True, timeout=SLOW_S)
    assert r.returncode == 2 and "radar" in r.stderr


def _doctor_row(stdout: str, check: str) -> str:
    rows = [line for line in stdout.splitlines() if check in line]
    assert len(rows) == 1, (check, stdout)
    return rows[0]


def test_doctor_reports_checks_with_fixes(tmp_path: Path) -> None:
    """The environment decides each controlled check: PATH holds only a stand-in `ffmpeg` (so espeak-ng is
    missing and ffmpeg is found), the LLM port is held by a listening socket, the audio port is free."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "ffmpeg").chmod(0o755)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy, free = held.getsockname()[1], free_port()
        env = {**os.environ, "COLUMNS": "250", "PATH": str(bin_dir), "WATUS_LLM_PORT": str(busy),
               "WATUS_AUDIO_PORT": str(free)}
        r = subprocess.run([*WATUS, "doctor"], cwd=ROOT, capture_output=True, text=True, timeout=SLOW_S, env=env)
    assert r.returncode == 0, r.stderr  # problems are reported, not an error of the command
    espeak = _doctor_row(r.stdout, "espeak-ng (second TTS engine)")
    assert "problem" in espeak and "apt-get install espeak-ng" in espeak
    sound_files = _doctor_row(r.stdout, "ffmpeg or libsndfile for audio files")
    assert "ok" in sound_files and "problem" not in sound_files and "apt-get install libsndfile1" not in r.stdout
    python = _doctor_row(r.stdout, f"Python {sys.version.split()[0]} (>= 3.10)")
    assert "ok" in python and "install Python" not in python
    assert "ok" in _doctor_row(r.stdout, f"port {busy} (llm): in use")  # informational: in use when it runs
    assert "ok" in _doctor_row(r.stdout, f"port {free} (audio): free")
    problems = sum(" problem " in line for line in r.stdout.splitlines())
    assert problems >= 1 and f"{problems} problem(s)." in r.stdout


def test_watus_up_pairs_the_audio_settings_with_the_agent_s(monkeypatch: pytest.MonkeyPatch) -> None:
    from watus.cli.ops import paired_settings

    for name in ("WATUS_AGENT_ADDRESSING", "WATUS_AGENT_PREEMPTIVE"):
        monkeypatch.delenv(name, raising=False)
    assert paired_settings({"A": "1"}) == {"A": "1"}  # the defaults need nothing more
    # Preemptive replies are on by default; the longer unsure wait goes with the end-of-turn model only.
    assert paired_settings({"WATUS_AUDIO_TURN_END": "model"})["WATUS_AUDIO_TURN_UNSURE_SILENCE_MS"] == "1000"
    monkeypatch.setenv("WATUS_AGENT_PREEMPTIVE", "false")
    assert paired_settings({"WATUS_AUDIO_TURN_END": "model"}) == {"WATUS_AUDIO_TURN_END": "model"}
    monkeypatch.setenv("WATUS_AGENT_ADDRESSING", "name")
    monkeypatch.setenv("WATUS_AGENT_PREEMPTIVE", "true")
    paired = paired_settings({"WATUS_AUDIO_TURN_END": "model"})
    assert paired["WATUS_AUDIO_ASR_FIT_NAME_CHECK"] == "true"
    assert paired["WATUS_AUDIO_TURN_UNSURE_SILENCE_MS"] == "1000"
    assert AudioSettings(**{"asr_fit_name_check": True}).asr_fit_name_check  # a value the service accepts
    mine = {"WATUS_AUDIO_ASR_FIT_NAME_CHECK": "false", "WATUS_AUDIO_TURN_UNSURE_SILENCE_MS": "700"}
    assert paired_settings(mine) == mine  # the user's own choice stands
    monkeypatch.setenv("WATUS_AGENT_ADDRESSING", "nobody")
    assert paired_settings({}) == {}  # invalid: left for the agent to report


def test_doctor_flags_polish_on_the_bundled_135m_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Polish with the CPU default is a problem with a fix; English, or a model of one's own, is not."""
    from watus.cli.services import language_check

    for name in ("WATUS_AGENT_LANGUAGE", "WATUS_AGENT_LLM_URL", "WATUS_LLM_MODEL_PATH", "WATUS_LLM_ENGINE",
                 "WATUS_LLM_PORT", "WATUS_LLM_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert language_check() is None  # English: nothing to say
    monkeypatch.setenv("WATUS_AGENT_LANGUAGE", "pl")
    check = language_check()
    assert check is not None
    what, ok, fix = check
    assert not ok and "SmolLM2-135M" in what and "WATUS_LLM_MODEL_PATH" in fix
    gguf = tmp_path / "bigger.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("WATUS_LLM_MODEL_PATH", str(gguf))
    assert language_check() == ("robot language: Polish", True, check[2])
    monkeypatch.delenv("WATUS_LLM_MODEL_PATH")
    monkeypatch.setenv("WATUS_AGENT_LLM_URL", "http://192.0.2.9:8000")  # another server: its model is unknown
    other = language_check()
    assert other is not None and other[1]
