"""`watus ask`, the README's main job: one spoken turn offline, WAV in, WAV out, latency printed."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from tests.helpers import ROOT

WATUS = [sys.executable, "-m", "watus.cli"]


def _ask(llm_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WATUS_AGENT_LLM_URL": llm_url, "COLUMNS": "200", "WATUS_AGENT_TEMPERATURE": "0"}
    return subprocess.run([*WATUS, "ask", *args], capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)


def test_ask_from_text_writes_the_spoken_reply(llm_url: str, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    r = _ask(llm_url, "--text", "What is the capital of France?", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "transcript: What is the capital of France?" in r.stdout
    reply = next(line for line in r.stdout.splitlines() if line.startswith("reply:"))
    assert len(reply) > len("reply: ")
    # The turn log's stage names, each in ms after the end of speech, in the order they happen.
    at = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if len(cells) >= 2 and cells[0] in ("asr_done", "scene_fetched", "llm_first_token", "first_sentence",
                                            "tts_first_audio", "playback_start", "e2e"):
            at[cells[0]] = float(cells[1])
    stages = ["asr_done", "scene_fetched", "llm_first_token", "first_sentence", "tts_first_audio", "playback_start"]
    assert list(at) == [*stages, "e2e"], r.stdout
    assert all(at[a] <= at[b] for a, b in itertools.pairwise(stages)), at
    assert at["e2e"] == at["playback_start"] > 0
    assert "Camera: unavailable" in r.stdout  # no vision service: said plainly
    audio, rate = sf.read(out)
    assert rate == 22050 and len(audio) / rate > 0.3


def test_ask_from_a_wav_file(llm_url: str, tmp_path: Path) -> None:
    question = tmp_path / "q.wav"
    first = _ask(llm_url, "--text", "How are you today?", "--out", str(question))
    assert first.returncode == 0, first.stderr
    # The first reply, spoken, becomes the next question: a real recording of speech.
    spoken = next(line for line in first.stdout.splitlines() if line.startswith("reply:"))[len("reply: "):]
    r = _ask(llm_url, "--wav", str(question))
    assert r.returncode == 0, r.stderr
    heard = next(line for line in r.stdout.splitlines() if line.startswith("transcript:"))[len("transcript: "):]
    words = set(spoken.lower().split()) & set(heard.lower().split())
    assert len(words) >= min(3, len(spoken.split())), (spoken, heard)


def test_ask_bad_input_is_one_clear_line(llm_url: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all")
    r = _ask(llm_url, "--wav", str(junk))
    assert r.returncode == 1 and "ask failed" in r.stderr and "Traceback" not in r.stderr
    both = _ask(llm_url, "--wav", str(junk), "--text", "x")
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_ask_with_an_image_sees_it(llm_url: str, tmp_path: Path) -> None:
    from vision.samples import sample_image

    r = _ask(llm_url, "--text", "What do you see?", "--image", str(sample_image("bus.jpg")))
    assert r.returncode == 0, r.stderr
    scene = next(line for line in r.stdout.splitlines() if line.startswith("scene:"))
    assert "bus" in scene and "people" in scene, scene
