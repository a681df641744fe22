"""The processes a benchmark runs: `python -m <service>` on a free loopback port, healthy, then stopped.

Every benchmark that measures a service through HTTP starts it the same way, with its output in a log
file whose tail goes into the error when it dies or never answers `/health`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def service(module: str, env: dict[str, str], url: str, log_path: Path, timeout_s: float,
            error: type[Exception] = RuntimeError) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m <module>` with `env` over this process's environment, healthy at `url` until the block ends.

    Raises `error` (with the log's tail) if it exits or is not healthy within `timeout_s`.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module], env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout_s
            with httpx.Client(trust_env=False, timeout=2.0) as http:
                while True:
                    if proc.poll() is not None:
                        raise error(f"{module} exited with code {proc.returncode} before it was healthy; "
                                    f"log {log_path}:\n{log_tail(log_path)}")
                    with contextlib.suppress(httpx.HTTPError):
                        if http.get(url + "/health").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise error(f"{module} was not healthy within {timeout_s:.0f} s; log {log_path}:\n"
                                    f"{log_tail(log_path)}")
                    time.sleep(0.2)
            log.info("%s ready at %s (log %s)", module, url, log_path)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10.0)


def own_cpu_seconds() -> float:
    """CPU time of this process and its children (the services a benchmark started), user + system."""
    me = psutil.Process()
    total = 0.0
    for proc in (me, *me.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def wait_agent_connected(agent_url: str, until: float) -> bool:
    """Whether the agent reports its audio event stream connected before `until` (monotonic s)."""
    with httpx.Client(trust_env=False, timeout=3.0) as http:
        while time.monotonic() < until:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if http.get(agent_url + "/health").json().get("audio_events") == "connected":
                    return True
            time.sleep(0.25)
    return False
