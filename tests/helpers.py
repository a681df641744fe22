"""Test helpers: free ports and real service processes on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before becoming healthy")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


@contextmanager
def run_service(module: str, env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    """Start `python -m <module>` with `env` added, wait for /health, yield its base URL, stop it."""
    with service_process(module, env, port, log_path) as (url, _):
        yield url


@contextmanager
def service_process(module: str, env: dict[str, str], port: int, log_path: Path, *, healthy: bool = True,
                    timeout: float = 60.0, base_env: dict[str, str] | None = None,
                    ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Like `run_service`, also yielding the process (for tests that kill it). `healthy=False` waits only
    until /health answers at all (a process that stays 503); `base_env` replaces this process's environment."""
    full_env = {**(os.environ if base_env is None else base_env), **env}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", module], env=full_env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            if healthy:
                wait_healthy(url, proc, timeout=timeout)
            else:
                _wait_answering(url, proc, timeout, log_path)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_answering(url: str, proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log_path.read_text(errors="replace")[-2000:]
        try:
            httpx.get(url + "/health", timeout=2)
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout} s"
            time.sleep(0.2)
