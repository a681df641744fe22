"""Whisper on a window fitted to the utterance (`audio.asr.fitted`): its arithmetic, and the real tiny.en on
piper's questions against the full 30 s window (same words), through the engine and the live listener."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from audio.asr.base import TranscribeOptions
from audio.asr.faster_whisper import names_a_hotword
from audio.asr.fitted import FULL_FRAMES, cut_loop, fitted_features, max_tokens_for, window_frames
from audio.asr.runner import AsrRunner
from audio.pcm import ASR_RATE, F32
from audio.runtime import Models, load_models
from tests.test_audio_listen import _settings, speak
from watus.bench.speech_workload import word_error_rate

QUESTIONS = ("What do you see?", "How many people are in front of you?", "Please turn on the lights.",
             "Is there anyone standing near the door?", "Tell me a short story about a cat.",
             "Could you tell me what the weather is like today?")


def test_the_window_is_the_audio_plus_a_second_rounded_up_and_never_more_than_whisper_s() -> None:
    assert window_frames(ASR_RATE) == 200  # 1 s + 1 s
    assert window_frames(int(1.2 * ASR_RATE)) == 300
    assert window_frames(0) == 100
    assert window_frames(40 * ASR_RATE) == FULL_FRAMES
    assert max_tokens_for(2 * ASR_RATE) == 28


def test_a_decoder_that_starts_over_is_cut_where_it_does() -> None:
    assert cut_loop([5, 6, 7, 8, 9, 5, 6, 7, 8]) == [5, 6, 7, 8, 9]
    assert cut_loop([5, 6, 7, 8, 5, 6, 9, 10]) == [5, 6, 7, 8, 5, 6, 9, 10]  # two tokens again is no loop
    assert cut_loop([1, 2, 3, 1, 2]) == [1, 2, 3, 1, 2]  # too short to tell
    assert cut_loop([]) == []


def test_features_keep_the_speech_and_zero_the_padding() -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    tone = (0.1 * np.sin(np.arange(int(1.5 * ASR_RATE)) * 2 * np.pi * 440 / ASR_RATE)).astype(np.float32)
    feats = fitted_features(FeatureExtractor(feature_size=80), tone)
    assert feats.shape == (1, 80, 300)
    assert np.abs(feats[0, :, :140]).sum(axis=0).min() > 0  # every speech frame carries the tone
    assert not feats[0, :, 160:].any()


@pytest.fixture(scope="module")
def models() -> Iterator[Models]:
    loaded = asyncio.run(load_models(_settings()))
    yield loaded
    loaded.close()


def transcribe(runner: AsrRunner, audio: F32, options: TranscribeOptions) -> tuple[str, float]:
    t = runner.submit(audio, options, source="test").result(timeout=60)
    return t.text, t.window_s


def test_fitted_window_hears_the_same_words_as_the_full_one(models: Models) -> None:
    full = TranscribeOptions(language="en", hotwords="Watus")
    fitted = dataclasses.replace(full, fit_window=True)
    errors: dict[str, list[float]] = {"full": [], "fitted": []}
    for question in QUESTIONS:
        audio = np.concatenate([np.zeros(ASR_RATE // 5, np.float32), speak(models, question)])
        text_full, window_full = transcribe(models.asr, audio, full)
        text_fit, window_fit = transcribe(models.asr, audio, fitted)
        assert window_full == 30.0 and window_fit == window_frames(len(audio)) / 100 < 5, (question, window_fit)
        errors["full"].append(word_error_rate(question, text_full))
        errors["fitted"].append(word_error_rate(question, text_fit))
        assert errors["fitted"][-1] <= 0.25, (question, text_fit)
    assert np.mean(errors["fitted"]) <= np.mean(errors["full"]) + 0.05, errors


LONG_REQUESTS = ("I would like you to look around the room and tell me how many people are here, and what they "
                 "are wearing today.",
                 "Please go to the kitchen, find the red cup on the table next to the window, and bring it back to "
                 "me here in the living room.",
                 "When you see someone wearing a blue jacket walk through the door, say hello to them and ask them "
                 "if they want a cup of tea.")


def test_a_long_request_keeps_its_last_words_on_the_fitted_window(models: Models) -> None:
    """5-6 s of piper in one breath: with a bound of 6 tokens a second the decoder stopped early in 3 of these."""
    fitted = TranscribeOptions(language="en", hotwords="Watus", fit_window=True)
    for request in LONG_REQUESTS:
        audio = np.concatenate([np.zeros(ASR_RATE // 5, np.float32), speak(models, request),
                                np.zeros(ASR_RATE // 5, np.float32)])
        text, _ = transcribe(models.asr, audio, fitted)
        last = request.rstrip(".").split()[-2:]
        assert text.rstrip(".").split()[-2:] == last and word_error_rate(request, text) <= 0.1, (request, text)


def test_the_name_check_redoes_a_transcript_without_the_hotword_on_the_full_window(models: Models) -> None:
    checked = TranscribeOptions(language="en", hotwords="Watus", fit_window=True, hotword_check=True)
    audio = np.concatenate([np.zeros(ASR_RATE // 5, np.float32), speak(models, "What time is it?")])
    text, window = transcribe(models.asr, audio, checked)
    assert window == 30.0 and word_error_rate("What time is it?", text) <= 0.25, (text, window)
    text, window = transcribe(models.asr, audio, dataclasses.replace(checked, hotword_check=False))
    assert window < 5 and word_error_rate("What time is it?", text) <= 0.25, (text, window)
    noise = (np.random.default_rng(2).standard_normal(ASR_RATE) * 0.002).astype(np.float32)
    assert transcribe(models.asr, noise, checked) == ("", 2.0)  # no words: nothing to check the name in


def test_a_hotword_is_a_whole_word_in_any_case() -> None:
    assert names_a_hotword("Watus, what time is it?", "Watus")
    assert names_a_hotword("hey WATUS.", "Robot, Watus")
    assert not names_a_hotword("Let us. What time is it?", "Watus")
    assert not names_a_hotword("Watusi dance", "Watus")
    assert not names_a_hotword("Watus", None)


def test_silence_on_a_fitted_window_is_no_words(models: Models) -> None:
    noise = (np.random.default_rng(1).standard_normal(ASR_RATE) * 0.002).astype(np.float32)
    text, window = transcribe(models.asr, noise, TranscribeOptions(language="en", fit_window=True))
    assert window == 2.0
    assert text == "", text  # faster-whisper's no-speech rule holds on the short window too


async def test_the_live_listener_uses_the_fitted_window_except_for_long_turns(tmp_path: Path) -> None:
    from tests.test_audio_listen import silence, start_run, write_wav

    loaded = await load_models(_settings())
    try:
        spoken = speak(loaded, "Please open the kitchen door.")
        wav = write_wav(tmp_path / "mic.wav", silence(1.0), spoken, silence(1.2))
        # The VAD's segment is piper's clip less a little of its padding: a 3 or 4 s window; 30 s past the limit.
        for fit_max_s, windows in ((15.0, (3.0, 4.0)), (0.5, (30.0,))):
            run = await start_run(loaded, _settings(mic_backend="file", mic_file=wav, asr_fit_window=True,
                                                       asr_fit_max_s=fit_max_s))
            try:
                final = await run.wait(lambda e: e.type == "transcript", 20)
            finally:
                await run.runtime.close()
            assert "kitchen" in final.text.lower() and "door" in final.text.lower(), final.text
            assert final.asr_window_s in windows, (fit_max_s, final.asr_window_s)
    finally:
        loaded.close()
