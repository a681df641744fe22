"""Talking over the robot, in the virtual room: echo cancellation, barge-in, false interruptions, wake word.

The room microphone (`WATUS_AUDIO_MIC_BACKEND=room`) hears the robot's own speaker output through an
echo path plus the people's WAVs; the speaker is the null sink (paced like a device). Models are real:
piper speaks, Silero listens, faster-whisper transcribes, WebRTC AEC3 cancels. The person's voice is
espeak-ng's (not piper's joe), so the canceller cannot be helped by the two voices being the same.
The room's clock is started when the robot's first audio plays, so "1 s into the reply" is exact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf

from audio.devices.room import synthetic_rir
from audio.pcm import ASR_RATE, F32
from audio.runtime import Models, asr_options, load_models
from audio.settings import AudioSettings
from tests.test_audio_listen import Run, silence, speak, start_run, write_wav
from watus.bench.duplex import espeak_wav
from watus.bench.speech_workload import word_error_rate as wer

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the second voice")]

#: Five long sentences: about 20 s of the robot talking.
FIVE_SENTENCES = (
    "Let me tell you a long story about the robot that lived in the kitchen of a large old house. "
    "Every morning it watched the people come down the stairs, and it said hello to each of them by name. "
    "It listened to their questions about the weather, the news, and what there was to eat for breakfast. "
    "In the afternoon it cleaned the floor, watered the plants on the window sill, and sorted the letters. "
    "When the evening came, it sang a quiet song and waited patiently for the next day to begin again.")
PHRASES = ("Stop, please stop now.", "Wait a moment, I have a question.", "Excuse me, what is the time?")


def _settings(**kw: object) -> AudioSettings:
    base: dict[str, object] = {"asr_threads": 2, "tts_threads": 2, "speaker_backend": "null",
                               "mic_backend": "room", "room_echo_gain_db": -6.0}
    base.update(kw)
    return AudioSettings(**base)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module")
async def models() -> AsyncIterator[Models]:
    loaded = await load_models(_settings(mic_backend="none"))
    yield loaded
    loaded.close()


def espeak(text: str, path: Path) -> F32:
    """The second voice: espeak-ng, at 16 kHz, written to `path` too."""
    audio, _ = sf.read(espeak_wav(text, path), dtype="float32")
    return np.asarray(audio, np.float32)


def rms_db(x: F32) -> float:
    return float(20 * np.log10(max(float(np.sqrt(np.mean(x ** 2))), 1e-9)))


async def talk(run: Run, models: Models, text: str, at_s: float = 0.0) -> None:
    """The robot says `text`; the room's talkers count from its first audio (+ `at_s`)."""
    assert run.runtime.speaker is not None
    await run.runtime.speaker.say(text, models.voices.default, turn_id="reply", barge_in=False)
    started = await run.wait(lambda e: e.type == "playback_started", 10)
    # The room's clock (the app starts it when /health first answers 200): here, the reply's first audio.
    assert run.runtime.room is not None
    run.runtime.room.start_clock(started.t_ns + int(at_s * 1e9))


@pytest.mark.parametrize("mode", ["aec", "half"])
async def test_the_robot_does_not_hear_itself(models: Models, mode: str) -> None:
    run = await start_run(models, _settings(echo_mode=mode))
    try:
        await talk(run, models, FIVE_SENTENCES)
        await run.wait(lambda e: e.type == "playback_finished", 60)
        await asyncio.sleep(1.0)  # the echo's tail, and anything spurious
        health = run.runtime.health()
    finally:
        await run.runtime.close()
    heard = [e.type for e in run.events if e.type in ("speech_started", "transcript", "playback_paused",
                                                      "interrupted", "speculative_transcript")]
    assert heard == [], heard
    echo = health["echo"]
    assert isinstance(echo, dict) and echo["mode"] == mode
    if mode == "aec":
        assert echo["erle_db"] is not None and echo["erle_db"] >= 25, echo
        assert echo["far_active_s"] > 10 and 0 < echo["cpu_fraction"] < 0.05, echo


async def _barge_in(models: Models, tmp_path: Path, phrase: str, gain_db: float,
                    may_miss: bool = False) -> tuple[str | None, float, Run]:
    """The robot talks, the person says `phrase` 1 s in: (transcript, ms from onset to paused, the run).
    With `may_miss`, a barge-in whose words were never transcribed (the VAD dropped what it heard as too
    short, and no later utterance came) gives None instead of failing."""
    path = tmp_path / f"person-{abs(hash((phrase, gain_db)))}.wav"
    espeak(phrase, path)
    run = await start_run(models, _settings(echo_mode="aec", room_speech=[str(path)], room_speech_at_s=[1.0],
                                            room_speech_gain_db=gain_db))
    transcript: Any = None
    try:
        await talk(run, models, FIVE_SENTENCES)
        paused = await run.wait(lambda e: e.type == "playback_paused", 10)
        try:
            transcript = await run.wait(lambda e: e.type == "transcript", 20)
        except AssertionError:
            if not may_miss or not [e for e in run.of("speech_ended") if getattr(e, "dropped", None)]:
                raise
        assert run.runtime.room is not None
        talkers: list[dict[str, Any]] = run.runtime.room.schedule()["talkers"]  # type: ignore[assignment]
    finally:
        await run.runtime.close()
    onset_to_silent_ms = (paused.t_ns - talkers[0]["onset_ns"]) / 1e6
    if transcript is None:
        return None, onset_to_silent_ms, run
    assert transcript.model_dump()["barge_in"] is True
    return transcript.model_dump()["text"], onset_to_silent_ms, run


async def test_a_barge_in_pauses_the_robot_at_once_and_keeps_every_word(models: Models, tmp_path: Path) -> None:
    errors, stops = [], []
    for phrase in PHRASES:
        text, stop_ms, run = await _barge_in(models, tmp_path, phrase, 0.0)
        assert text is not None
        errors.append(wer(phrase, text))
        stops.append(stop_ms)
        # Paused, not stopped: stopping is the agent's decision (the test's own shutdown aside).
        assert not [e for e in run.of("interrupted") if e.model_dump()["reason"] != "shutdown"]
    assert float(np.mean(errors)) <= 0.15, list(zip(PHRASES, errors, strict=True))
    assert max(stops) <= 250, stops  # the bench's goal is p95 ≤ 150 ms; CI's 2 busy cores get headroom


async def test_a_person_10_db_quieter_than_the_echo_still_barges_in(models: Models, tmp_path: Path) -> None:
    """Every barge-in pauses the robot, all but at most one of six are transcribed as barge-ins, and their words are
    scored against what the same ASR (a barge-in's: full window, beam 5) hears from the person alone, so a word
    tiny.en mishears on this voice even without the robot talking is not blamed on the echo.

    Measured on a 2-core box with the echo fit Levinson alone gave (54 barge-ins at -10 dB): "Stop," came out
    as "On top," or "What's up?" in 6 of 18, because the fit on ~1 s of the robot left its voice only ~10-17 dB
    down after the onset. With the fit refined to the exact least squares (`audio.overlap.fit_echo_path`), 45
    barge-ins in a row: "Stop," heard in 15 of 15, mean WER 0.05 against the person alone (the rest is
    tiny.en hearing "I have a question" as "I am a question", which it also does on the person alone with
    another lead-in), none untranscribed. An earlier session saw, about one run in 15, a barge-in that was never
    transcribed: the VAD dropped what it heard as too short (under 300 ms of speech), the robot resumed, and
    the rest of the phrase started no utterance in 20 s; not seen in 105 barge-ins since. Hence: two passes, at
    most one such miss, and a mean WER of the others of 0.15 (the issue's figure; one lost "Stop," alone is
    0.08 of it). That the repair itself works is `tests/test_overlap.py`'s to show: here, with it off, 9
    barge-ins scored 0.18 against the phrases ("Wait a moment" came out as "Winter moment")."""
    # The echo's level: the robot's voice through the room's −6 dB path.
    echo = np.convolve(speak(models, FIVE_SENTENCES[:200]), synthetic_rir(40, -6, 120))
    settings = _settings()  # what the person alone sounds like to a barge-in's ASR options
    options = dataclasses.replace(asr_options(settings), beam_size=settings.asr_barge_in_beam_size)
    errors: list[float] = []  # of the barge-ins that were transcribed
    texts: list[tuple[str, str | None]] = []
    for _ in range(2):
        for phrase in PHRASES:
            person = espeak(phrase, tmp_path / "probe.wav")
            alone = (await models.asr.transcribe(person, options, source="test")).text
            text, _, _ = await _barge_in(models, tmp_path, phrase, rms_db(echo) - 10 - rms_db(person), may_miss=True)
            texts.append((alone, text))
            if text is not None:
                errors.append(wer(alone, text))
    assert sum(text is None for _, text in texts) <= 1, texts
    assert float(np.mean(errors)) <= 0.15, (texts, errors)


async def test_a_cough_pauses_the_reply_and_it_resumes_where_it_was(models: Models, tmp_path: Path) -> None:
    # A cough-like burst: 200 ms of a voiced vowel (espeak's "ah"), faded in and out.
    vowel = espeak("aaah", tmp_path / "vowel.wav")
    start = int(np.argmax(np.abs(vowel) > 0.05))
    burst = vowel[start:start + int(0.2 * ASR_RATE)].copy()
    burst *= np.hanning(len(burst)).astype(np.float32) ** 0.3
    cough = write_wav(tmp_path / "cough.wav", burst, silence(0.1))
    run = await start_run(models, _settings(echo_mode="aec", room_speech=[str(cough)], room_speech_at_s=[1.0],
                                            barge_in_resume_ms=1000))
    reply = FIVE_SENTENCES.split(". ")[0] + ". " + FIVE_SENTENCES.split(". ")[1] + "."
    try:
        await talk(run, models, reply)
        await run.wait(lambda e: e.type == "playback_paused", 10)
        resumed = await run.wait(lambda e: e.type == "playback_resumed", 10)
        finished = await run.wait(lambda e: e.type == "playback_finished", 30)
    finally:
        await run.runtime.close()
    assert not [e for e in run.of("interrupted") if e.model_dump()["reason"] != "shutdown"]
    assert not run.of("transcript")
    assert resumed.model_dump()["reason"] in ("not_speech", "timeout", "no_words")
    # The whole reply played: what the pause cut was played again afterwards.
    full = sum(len(c) for c in models.voices.default.engine.synthesize(reply, models.voices.default.voice, 1.0))
    full_ms = full * 1000 / models.voices.default.engine.sample_rate
    assert finished.model_dump()["played_ms"] >= full_ms * 0.85, (finished, full_ms)


async def test_the_wake_word_is_heard_through_the_room(models: Models, tmp_path: Path) -> None:
    wake = write_wav(tmp_path / "alexa.wav", silence(0.5), speak(models, "Alexa."), silence(0.5))
    run = await start_run(models, _settings(echo_mode="aec", wake_word="alexa", room_speech=[str(wake)],
                                            room_speech_at_s=[0.5]))
    try:
        run.runtime.service_ready()
        hit = await run.wait(lambda e: e.type == "wake_word", 10)
    finally:
        await run.runtime.close()
    assert hit.model_dump()["model"] == "alexa" and hit.model_dump()["probability"] > 0.5
