"""The dashboard: a real browser (Debian's chromium through playwright) on `watus up` with every real
process, a WAV file as the microphone and an image folder as the camera; and the key off loopback.

The whole-system test saves the screenshot the README shows (`docs/dashboard.png` when
`WATUS_WRITE_DOCS=1`, else only in the test's folder).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf

from tests.helpers import ROOT, free_port
from watus.agent.app import create_app
from watus.agent.settings import AgentSettings
from watus.core.security import is_loopback

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RATE = 16_000


def _say(text: str) -> np.ndarray:
    """A person's voice (espeak-ng, not the robot's piper voice), at 16 kHz."""
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", text], capture_output=True,
                         check=True).stdout
    import io

    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    from audio.pcm import resample

    return resample(audio, rate, RATE)


# --- the key, without processes ---------------------------------------------------------------------------


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7") and not is_loopback("")


async def test_with_a_key_every_endpoint_but_health_and_metrics_needs_it() -> None:
    app = create_app(AgentSettings(host="0.0.0.0", api_key="s3cret-key"), voice_loop=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as http:
        for method, path in (("GET", "/"), ("GET", "/v1/dashboard/events"), ("POST", "/v1/turns"),
                             ("POST", "/v1/stop"), ("POST", "/v1/chat")):
            r = await http.request(method, path)
            assert r.status_code == 401, (path, r.status_code)
            assert r.json()["error"]["type"] == "authentication_error"
            assert r.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        page = await http.get("/", params={"key": "s3cret-key"})
        assert page.status_code == 200 and "<title>Watus" in page.text
        cookie = page.headers["set-cookie"]
        assert "watus_key=s3cret-key" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        # The page's own requests carry the cookie; a bearer key works for scripts.
        script = await http.get("/static/dashboard.js", headers={"Authorization": "Bearer s3cret-key"})
        assert script.status_code == 200 and "EventSource" in script.text
        http.cookies.set("watus_key", "s3cret-key")
        assert (await http.get("/static/dashboard.css")).status_code == 200
        assert (await http.get("/static/nope.js")).status_code == 404
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as http:
        health = await http.get("/health")
        assert health.status_code != 401  # /health stays open (503 here: the app's lifespan did not run)
        assert (await http.get("/metrics")).status_code != 401  # so does /metrics


async def test_on_loopback_the_page_needs_no_key_and_has_no_outside_assets() -> None:
    app = create_app(AgentSettings(), voice_loop=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent") as http:
        page = await http.get("/")
        assert page.status_code == 200
        for name in ("dashboard.js", "dashboard.css"):
            assert f'/static/{name}' in page.text
        assets = [(await http.get(f"/static/{name}")).text for name in ("dashboard.js", "dashboard.css")]
        text = page.text + "".join(assets)
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text


# --- the whole system in a real browser --------------------------------------------------------------------


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from vision.samples import sample_image

    camera = tmp_path / "camera"
    camera.mkdir()
    shutil.copy(sample_image("bus.jpg"), camera / "bus.jpg")
    mic = tmp_path / "mic.wav"
    # Leading silence: `watus up` starts the agent after the others answer, and the microphone plays from
    # the audio service's start; the question must come once the agent listens.
    sf.write(mic, np.concatenate([np.zeros(RATE * 40, np.float32), _say("Hello robot, what is your name?"),
                                  np.zeros(RATE * 60, np.float32)]), RATE)
    ports = {name: free_port() for name in ("llm", "vision", "audio", "agent")}
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1",
           "WATUS_LLM_PORT": str(ports["llm"]), "WATUS_VISION_PORT": str(ports["vision"]),
           "WATUS_AUDIO_PORT": str(ports["audio"]), "WATUS_AGENT_PORT": str(ports["agent"]),
           "WATUS_VISION_SOURCE": str(camera), "WATUS_VISION_SOURCE_FPS": "2",
           "WATUS_AUDIO_MIC_BACKEND": "file", "WATUS_AUDIO_MIC_FILE": str(mic),
           "WATUS_AUDIO_SPEAKER_BACKEND": "wav", "WATUS_AUDIO_SPEAKER_WAV_PATH": str(tmp_path / "spoken.wav"),
           "WATUS_AGENT_TURN_LOG": str(tmp_path / "turns.jsonl"), "WATUS_AGENT_MAX_TOKENS": "40",
           "WATUS_AGENT_TEMPERATURE": "0"}
    up = subprocess.Popen([sys.executable, "-m", "watus.cli", "up", "--log-dir", str(tmp_path / "logs"),
                           "--max-restarts", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, cwd=ROOT)
    agent = f"http://127.0.0.1:{ports['agent']}"
    deadline = time.monotonic() + 400
    output: list[str] = []
    try:
        assert up.stdout is not None
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line and up.poll() is not None:
                raise AssertionError("watus up exited:\n" + "".join(output))
            output.append(line)
            if line.startswith("Dashboard:"):
                break
        else:
            raise AssertionError("watus up did not print the dashboard URL:\n" + "".join(output))
        yield {"url": agent + "/", "printed": line.split(":", 1)[1].strip(), "up": up, "tmp": tmp_path,
               "turn_log": tmp_path / "turns.jsonl"}
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def _records(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    return {r["turn_id"]: r for r in (json.loads(x) for x in path.read_text().splitlines() if x.strip())}


def _kill_vision(up: subprocess.Popen[str]) -> None:
    for child in psutil.Process(up.pid).children(recursive=True):
        if child.cmdline()[1:3] == ["-m", "vision"]:
            child.kill()
            return
    raise AssertionError("no vision process under watus up")


@pytest.mark.slow
def test_dashboard_shows_the_live_robot(system: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    assert system["printed"] == system["url"]  # `watus up` prints where the dashboard is
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 950})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(system["url"])
        page.wait_for_selector('#svc-agent[data-ok="true"]', timeout=30_000)
        page.wait_for_selector('#svc-llm[data-ok="true"]', timeout=30_000)
        page.wait_for_function("document.getElementById('camera').naturalWidth > 0", timeout=60_000)
        assert errors == [], errors  # the page loaded cleanly

        # The spoken question appears as heard, then its reply; the waterfall gains that turn.
        heard = page.wait_for_selector(".msg.user:has-text('robot')", timeout=180_000)
        turn_id = heard.get_attribute("data-turn-id")
        page.wait_for_selector(f'.msg.robot[data-turn-id="{turn_id}"][data-done="true"]', timeout=120_000)
        row = page.wait_for_selector(f'g.turn-row[data-turn-id="{turn_id}"]', timeout=10_000)
        record = _records(system["turn_log"])[turn_id]
        assert record["source"] == "voice" and record["e2e_ms"] is not None
        assert float(row.get_attribute("data-e2e") or "nan") == pytest.approx(record["e2e_ms"])
        assert page.locator(f'g.turn-row[data-turn-id="{turn_id}"] rect title').count() >= 5  # hover shows ms

        # A typed message is answered (and spoken) like a spoken one.
        page.fill("#say-text", "What do you see?")
        page.click("#say button[type=submit]")
        typed = page.wait_for_selector(".msg.user:has-text('What do you see?')", timeout=30_000)
        typed_id = typed.get_attribute("data-turn-id")
        page.wait_for_selector(f'.msg.robot[data-turn-id="{typed_id}"][data-done="true"]', timeout=120_000)
        assert _records(system["turn_log"])[typed_id]["source"] == "text"
        assert page.locator("#people tbody tr").count() >= 1  # bus.jpg has people, with their attributes
        shot = system["tmp"] / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("WATUS_WRITE_DOCS") == "1":
            shutil.copy(shot, ROOT / "docs" / "dashboard.png")

        # Vision dies: shown as down, and the rest keeps working.
        _kill_vision(system["up"])
        page.wait_for_selector('#svc-vision[data-ok="false"]', timeout=30_000)
        page.fill("#say-text", "Are you still there?")
        page.click("#say button[type=submit]")
        still = page.wait_for_selector(".msg.user:has-text('Are you still there?')", timeout=30_000)
        page.wait_for_selector(f'.msg.robot[data-turn-id="{still.get_attribute("data-turn-id")}"][data-done="true"]',
                               timeout=120_000)
        assert page.get_attribute("#svc-llm", "data-ok") == "true"
        browser.close()
