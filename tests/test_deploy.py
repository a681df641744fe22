"""Deployment: systemd units verified by systemd itself, the install script, the notify protocol."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, free_port, wait_healthy
from watus.cli.settings_catalog import env_file
from watus.core import sdnotify

INSTALL = ROOT / "deploy" / "install.sh"
UNITS = ["watus-llm.service", "watus-vision.service", "watus-audio.service", "watus-agent.service", "watus.target"]


def _install(prefix: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), "--prefix", str(prefix), "--python", sys.executable, *args],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    r = _install(tmp_path)
    assert r.returncode == 0, r.stderr
    return tmp_path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package `systemd`; .ci/run installs it)")
def test_units_pass_systemd_analyze_verify(installed: Path) -> None:
    unit_dir = installed / "etc" / "systemd" / "system"
    r = subprocess.run(["systemd-analyze", "verify", *[f"./{u}" for u in UNITS]], cwd=unit_dir,
                       capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stderr
    # Unknown keys and bad values are warnings (exit 0): there must be none.
    assert "watus" not in r.stderr, r.stderr
    agent = (unit_dir / "watus-agent.service").read_text()
    for other in ("watus-llm.service", "watus-vision.service", "watus-audio.service"):
        assert other in agent.split("After=")[1].splitlines()[0]
        assert other in agent.split("Wants=")[1].splitlines()[0]
    for unit in UNITS[:4]:
        text = (unit_dir / unit).read_text()
        for line in ("Type=notify", "Restart=on-failure", "WatchdogSec=", "NoNewPrivileges=yes",
                     "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes", "User=watus", "MemoryMax=",
                     f"EnvironmentFile={installed}/etc/watus/watus.env", "StartLimitBurst="):
            assert line in text, (unit, line)
        assert "@PREFIX@" not in text


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "root"
    r = _install(target, "--dry-run", "--memory", "32")
    assert r.returncode == 0, r.stderr
    assert "[dry-run] render" in r.stdout and "memory-32gb/watus-llm.conf" in r.stdout
    assert not any(p.is_file() for p in target.rglob("*")), "dry run wrote files"


def test_install_is_idempotent_and_keeps_an_edited_env(installed: Path) -> None:
    env = installed / "etc" / "watus" / "watus.env"
    assert env.read_text() == (ROOT / "deploy" / "watus.env.example").read_text()
    env.write_text(env.read_text() + "WATUS_LLM_PORT=9000\n")
    r = _install(installed, "--memory", "32")
    assert r.returncode == 0, r.stderr
    assert "keeping your edited" in r.stdout
    assert env.read_text().endswith("WATUS_LLM_PORT=9000\n")
    assert (installed / "etc" / "watus" / "watus.env.new").is_file()
    dropin = installed / "etc" / "systemd" / "system" / "watus-llm.service.d" / "memory.conf"
    assert "MemoryMax=14G" in dropin.read_text()
    assert (installed / "opt" / "watus" / "src" / "trt_server" / "app.py").is_file()
    # Back to 64 GB sizing: the drop-in goes away.
    assert _install(installed).returncode == 0 and not dropin.exists()


def test_uninstall_keeps_settings_unless_purged(installed: Path) -> None:
    r = subprocess.run(["bash", str(INSTALL), "--prefix", str(installed), "--uninstall"], capture_output=True,
                       text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stderr
    assert not (installed / "etc" / "systemd" / "system" / "watus-llm.service").exists()
    assert not (installed / "opt" / "watus").exists()
    assert (installed / "etc" / "watus" / "watus.env").is_file()
    r = subprocess.run(["bash", str(INSTALL), "--prefix", str(installed), "--uninstall", "--purge"],
                       capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0 and not (installed / "etc" / "watus").exists()


def test_bad_options_are_refused(tmp_path: Path) -> None:
    r = _install(tmp_path, "--memory", "16")
    assert r.returncode == 2 and "--memory" in r.stderr


def test_readme_reference_lists_every_setting() -> None:
    from watus.cli.readme import with_reference

    readme = (ROOT / "README.md").read_text()
    assert readme == with_reference(readme), "regenerate with: watus config --readme README.md"


def test_env_example_lists_every_setting() -> None:
    assert (ROOT / "deploy" / "watus.env.example").read_text() == env_file(), \
        "regenerate with: watus config --env > deploy/watus.env.example"


class NotifySocket:
    """systemd's side of the notify socket, read all the time as systemd reads it (a queue left unread
    is full at net.unix.max_dgram_qlen datagrams, 10 by default)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.got: list[str] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def getsockname(self) -> str:
        return str(self.sock.getsockname())

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                self.got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


#: Deadlines for what a busy 2-core machine may take long to do; each wait returns as soon as it is done.
SLOW_S = 90.0


def _received(sock: NotifySocket, timeout_s: float, done: Callable[[list[str]], bool],
              start: int | None = None) -> list[str]:
    """The datagrams `sock` got from `start` (default: now) on, once `done(got)` holds or `timeout_s` passed."""
    start = len(sock.got) if start is None else start
    until = time.monotonic() + timeout_s
    while not done(sock.got[start:]) and time.monotonic() < until:
        time.sleep(0.05)
    return sock.got[start:]


def test_notify_is_a_noop_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog_interval_s() is None


def test_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"watus-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready("hello")
        assert sock.recv(100).decode() == "READY=1\nSTATUS=hello"
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval_s() is None  # the watchdog is meant for another process
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == 5.0


@pytest.mark.parametrize(("module", "prefix"), [("trt_server", "WATUS_LLM_"), ("vision", "WATUS_VISION_"),
                                                ("audio", "WATUS_AUDIO_"), ("watus", "WATUS_AGENT_")])
def test_service_sends_ready_when_healthy_and_watchdog_pings(notify_socket: NotifySocket, tmp_path: Path,
                                                             module: str, prefix: str) -> None:
    port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "400000",
           f"{prefix}PORT": str(port)}
    env.pop("WATCHDOG_PID", None)
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, timeout=SLOW_S)
        # Pinged every 0.2 s (half of WatchdogSec) from the event loop: READY, then at least 4 pings more.
        pings = sum(m == "WATCHDOG=1" for m in notify_socket.got)
        _received(notify_socket, SLOW_S, lambda got: sum(m == "WATCHDOG=1" for m in got) >= 4)
        messages = list(notify_socket.got)
        assert sum(m == "WATCHDOG=1" for m in messages) >= pings + 4, messages
        ready = [m for m in messages if m.startswith("READY=1")]
        assert len(ready) == 1 and "ready" in ready[0], messages
        assert httpx.get(url + "/health", timeout=SLOW_S).status_code == 200
    finally:
        stop_at = len(notify_socket.got)
        proc.terminate()
        try:
            proc.wait(timeout=SLOW_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    rest = _received(notify_socket, SLOW_S, lambda got: "STOPPING=1" in got, start=stop_at)
    assert "STOPPING=1" in rest and not any(m.startswith("READY=1") for m in rest), rest
    assert proc.returncode == 0, f"{module} exited {proc.returncode} on SIGTERM"  # a stop systemd asked for
