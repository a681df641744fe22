"""Faults without processes: the turn log on a full disk, a missing folder and a torn line; the drain's
middleware; the voice loop losing the audio service mid-turn; `watus up`'s restart backoff.

The whole-process checks (SIGTERM to real services, kill -9 under `watus up`) are in tests/test_faults.py.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from tests.helpers import ROOT
from tests.test_voice_loop import make_loop, play_out, scripted, transcript, until
from watus.agent.turnlog import TurnLog, read_records
from watus.cli.ops import _Supervisor
from watus.cli.services import Managed, Service, stop_all
from watus.core.drain import Drain, install_drain

DEV_FULL = Path("/dev/full")


# --------------------------------------------------------------------------- the turn log


@pytest.mark.skipif(not DEV_FULL.exists(), reason="/dev/full (ENOSPC on every write) is Linux's")
def test_a_full_disk_is_reported_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    turn_log = TurnLog(DEV_FULL)
    with caplog.at_level(logging.DEBUG, logger="watus.agent.turnlog"):
        assert turn_log.check()  # opening works; only a write finds the disk full
        results = [turn_log.append({"turn_id": f"t{i}"}) for i in range(3)]
    assert results == [False, False, False]
    health = turn_log.health()
    assert health["ok"] is False and "ENOSPC" in health["error"] and health["lost"] == 3
    assert health["path"] == str(DEV_FULL)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot write the turn log" in errors[0].getMessage()  # once, not per turn


def test_an_unwritable_folder_is_found_at_start_and_the_log_recovers(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A path under a file (ENOTDIR / EEXIST) stands for a read-only folder: it fails for root too."""
    blocker = tmp_path / "var"
    blocker.write_text("not a folder")
    turn_log = TurnLog(blocker / "log" / "turns.jsonl")
    with caplog.at_level(logging.INFO, logger="watus.agent.turnlog"):
        assert not turn_log.check()
        assert turn_log.health()["ok"] is False and turn_log.health()["lost"] == 0
        assert not turn_log.append({"turn_id": "lost"})
        blocker.unlink()  # the operator fixes it
        assert turn_log.append({"turn_id": "kept"})
    health = turn_log.health()
    assert health == {"ok": True, "path": str(turn_log.path), "error": None, "lost": 0, "torn_lines": 0}
    assert [r["turn_id"] for r in turn_log.read()] == ["kept"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot write the turn log" in m for m in messages) == 1
    assert any("writable again; 1 record(s) were lost" in m for m in messages)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder (chmod does not stop it)")
def test_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        turn_log = TurnLog(folder / "turns.jsonl")
        assert not turn_log.check() and "EACCES" in str(turn_log.health()["error"])
    finally:
        folder.chmod(0o700)


def test_a_torn_last_line_is_quarantined_before_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    path.write_bytes(b'{"turn_id":"a"}\n{"turn_id":"b","reply":"half a li')  # a crash mid-write
    turn_log = TurnLog(path)
    assert turn_log.check()  # at start: the torn line goes at once
    assert path.read_bytes() == b'{"turn_id":"a"}\n'
    turn_log.append({"turn_id": "c"})
    assert [json.loads(x)["turn_id"] for x in path.read_text().splitlines()] == ["a", "c"]
    assert turn_log.quarantine.read_bytes() == b'{"turn_id":"b","reply":"half a li\n'
    assert turn_log.health()["torn_lines"] == 1
    # A file that is one torn line only.
    path.write_bytes(b'{"turn_id":"x"')
    turn_log.append({"turn_id": "d"})
    assert path.read_text() == '{"turn_id":"d"}\n'


def test_a_short_write_of_our_own_is_taken_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "turns.jsonl"
    turn_log = TurnLog(path)
    turn_log.append({"turn_id": "a"})
    real_write = os.write
    calls = {"n": 0}

    def disk_fills(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, data[:7])  # the kernel wrote what fitted ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... and then nothing

    monkeypatch.setattr(os, "write", disk_fills)
    assert not turn_log.append({"turn_id": "b", "reply": "x" * 100})
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_text() == '{"turn_id":"a"}\n'
    assert turn_log.append({"turn_id": "c"}) and turn_log.health()["ok"]


def test_readers_skip_a_bad_line_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "turns.jsonl"
    path.write_text('{"turn_id":"a"}\nnot json\n[1]\n{"turn_id":"b"}\n{"turn_id":"c"')
    with caplog.at_level(logging.DEBUG, logger="watus.agent.turnlog"):
        assert [r["turn_id"] for r in read_records(path)] == ["a", "b"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "line 2" in warnings[0].getMessage()  # the unfinished last line: DEBUG only
    assert read_records(tmp_path / "missing.jsonl") == []


async def test_the_voice_loop_reports_the_turn_log_and_goes_on(tmp_path: Path) -> None:
    loop, speaker, _ = make_loop(tmp_path, scripted("Ok."))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    loop._log = TurnLog(blocker / "turns.jsonl")

    async def turn(n: int) -> None:
        await loop.handle(transcript(f"t{n}", "Hi"))
        await until(lambda: len(speaker.said) > n, "the reply")
        await play_out(loop, f"t{n}")
        await until(lambda: loop.turns_done == n + 1, "the turn to finish")

    await turn(0)
    await turn(1)
    assert loop._log.health()["lost"] == 2
    blocker.unlink()
    await turn(2)
    assert loop._log.health()["ok"] and [r["turn_id"] for r in loop._log.read()] == ["t2"]


# --------------------------------------------------------------------------- the voice loop and audio


async def test_audio_lost_mid_turn_fails_the_turn_at_once(tmp_path: Path) -> None:
    loop, speaker, turn_log = make_loop(tmp_path, scripted("Hello there. I am talking."))
    await loop.handle(transcript("t1", "Hi"))
    await until(lambda: bool(speaker.said), "the first sentence")
    loop.audio_lost("ReadError: peer closed")  # the audio process died while it played
    await until(lambda: loop.turns_done == 1, "the turn record")
    (rec,) = turn_log.read()
    assert rec["error"].startswith("audio: the audio service went away") and rec["interrupted"] is False
    loop.audio_lost("again")  # no turn under way: nothing to do
    await loop.handle(transcript("t2", "Hi again"))  # the audio service is back: the next turn works
    await until(lambda: len(speaker.said) > 2, "the next reply")
    await play_out(loop, "t2")
    await until(lambda: loop.turns_done == 2, "the next record")
    assert turn_log.read()[1]["error"] is None


# --------------------------------------------------------------------------- the drain


def _drained_app(drain_s: float) -> tuple[FastAPI, Drain]:
    app = FastAPI()
    drain = install_drain(app, drain_s)
    release = asyncio.Event()
    app.state.release = release

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/slow")
    async def slow() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first\n"
            await release.wait()
            yield b"last\n"

        return StreamingResponse(body())

    return app, drain


async def test_the_drain_waits_for_requests_in_flight_and_refuses_new_ones() -> None:
    app, drain = _drained_app(5.0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        slow = asyncio.create_task(client.get("/slow"))
        await until(lambda: drain.active == 1, "the request in flight")
        stopping = asyncio.create_task(drain.run())
        await until(lambda: drain.draining, "the drain")
        refused = await client.post("/v1/chat/completions", json={})
        assert refused.status_code == 503 and refused.headers["connection"] == "close"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "shutting_down"
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "stopping"
        assert not stopping.done()
        app.state.release.set()
        assert (await slow).text == "first\nlast\n"
        assert await asyncio.wait_for(stopping, 5) is True and not drain.expired


async def test_the_drain_expires_work_that_does_not_end() -> None:
    app, drain = _drained_app(0.2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        slow = asyncio.create_task(client.get("/slow"))
        await until(lambda: drain.active == 1, "the request in flight")
        started = time.monotonic()
        stopping = asyncio.create_task(drain.run())
        await until(lambda: drain.expired, "the cut-off")
        assert time.monotonic() - started >= 0.2
        app.state.release.set()  # what a stream does when it sees `expired`: it ends
        await slow
        assert await asyncio.wait_for(stopping, 5) is False
    assert drain.cut_off().body()["error"]["type"] == "server_shutting_down"


# --------------------------------------------------------------------------- watus up


def test_up_stops_the_agent_first_then_the_others_at_once_killing_what_ignores_sigterm(tmp_path: Path) -> None:
    (tmp_path / "stubborn.py").write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                          "print('ready', flush=True)\ntime.sleep(120)\n")
    (tmp_path / "polite.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    procs = [Managed(Service(name, module, f"WATUS_T{i}_", 9), tmp_path / f"{name}.log", env)
             for i, (name, module) in enumerate([("agent", "stubborn"), ("llm", "stubborn"), ("vision", "stubborn"),
                                                 ("audio", "polite")])]
    for m in procs:
        m.start()
    deadline = time.monotonic() + 60
    while not all(m.log_path.exists() and "ready" in m.log_path.read_text() for m in procs):
        assert time.monotonic() < deadline, "the stand-in processes did not start"
        time.sleep(0.05)
    t = time.monotonic()
    stop_all(procs, timeout_s=2.0)
    took = time.monotonic() - t
    assert [m.proc.returncode for m in procs if m.proc] == [-9, -9, -9, -15]
    # The agent's 2 s, then the other three's 2 s together (one by one they would take 6 s).
    assert 3.9 <= took < 7.0, took


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_processes_of_a_killed_watus_up_do_not_outlive_it(tmp_path: Path) -> None:
    (tmp_path / "polite.py").write_text("import time\ntime.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    script = ("import sys, time\nfrom pathlib import Path\nfrom watus.cli.services import Managed, Service\n"
              f"m = Managed(Service('llm', 'polite', 'WATUS_T_', 9), Path({str(tmp_path / 'llm.log')!r}), {env!r})\n"
              "m.start()\nprint(m.proc.pid, flush=True)\ntime.sleep(120)\n")
    up = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert up.stdout is not None
    child = psutil.Process(int(up.stdout.readline()))
    assert child.is_running() and child.ppid() == up.pid
    up.kill()  # as the OOM killer or `kill -9` would
    up.wait()
    deadline = time.monotonic() + 30
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the child outlived the killed `watus up`"
        time.sleep(0.05)


def test_up_restarts_a_process_that_keeps_dying_with_a_backoff(tmp_path: Path) -> None:
    ghost = Managed(Service("ghost", "watus_no_such_module", "WATUS_GHOST_", 9), tmp_path / "ghost.log",
                    dict(os.environ))
    supervisor = _Supervisor([ghost], max_restarts=2)

    def dead() -> float:
        assert ghost.proc is not None
        ghost.proc.wait(30)  # `python -m` of a module that does not exist: exits 1 at once
        return time.monotonic()

    ghost.start()
    now = dead()
    supervisor.tick(now)  # died within seconds of its start: restarted only after 1 s
    supervisor.tick(now + 0.5)
    assert ghost.restarts == 0
    supervisor.tick(now + 1.1)
    assert ghost.restarts == 1
    now = dead()
    supervisor.tick(now)
    supervisor.tick(now + 1.5)
    assert ghost.restarts == 1  # the second quick death waits 2 s
    supervisor.tick(now + 2.1)
    assert ghost.restarts == 2
    now = dead()
    supervisor.tick(now)  # the limit: stays down
    assert ghost.proc is None
    supervisor.tick(now + 60)
    assert ghost.restarts == 2


# --------------------------------------------------------------------------- systemd's notify socket


def test_watchdog_pings_never_block_on_a_receiver_that_does_not_read(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from watus.core import sdnotify

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(tmp_path / "notify.sock"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
        started = time.monotonic()
        sent = [sdnotify.notify("WATCHDOG=1", droppable=True) for _ in range(100)]  # the queue holds ~10
        assert time.monotonic() - started < 5
        assert sent[0] and not all(sent)  # the first went; those that found the queue full were dropped
