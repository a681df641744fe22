"""End-of-turn model (`audio.turn_model`): the decision rule, the model window, the missing-model error,
the setup step's checks, and the real Smart Turn model on phrases spoken by the robot's voice (piper)
and by espeak-ng.

The phrase lists are the measurement set the thresholds were chosen on: complete questions and commands,
and fragments cut mid-sentence (spoken alone, and cut out of the whole sentence in `CONTINUATIONS`).
`utterance` builds what the model sees at the first pause: 300 ms of pre-roll, the speech without the
TTS engine's own silences, 200 ms of silence. Piper samples noise, so every synthesis is another
rendition: the clear cases below stayed clear over five renditions each. The model tests need
`watus models setup --only audio`; they are skipped with that reason where it has not run.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import audio.modelsetup as modelsetup
from audio.pcm import ASR_RATE, F32, resample, to_float32
from audio.tts.base import TtsEngine
from audio.turn_model import (
    RECOMMENDED_COMPLETE_AT,
    RECOMMENDED_INCOMPLETE_BELOW,
    TurnModel,
    TurnModelError,
    TurnModelNotFoundError,
    decide,
    model_path,
    model_window,
)
from watus.core.modelstore import ModelStoreSettings, SetupError, StepContext, ToolEnv, cache_dir

COMPLETE_AT = RECOMMENDED_COMPLETE_AT
INCOMPLETE_BELOW = RECOMMENDED_INCOMPLETE_BELOW

COMPLETE = (
    "Please turn on the lights.",
    "What do you see in front of you?",
    "How many people are in the room?",
    "What time is it?",
    "Can you tell me a joke?",
    "Stop talking.",
    "What's the weather like today?",
    "Who am I?",
    "How old do you think I am?",
    "Tell me about yourself.",
    "What is your name?",
    "Turn left.",
    "Come here, please.",
    "Do you see a cup on the table?",
    "Thank you very much.",
    "Could you repeat that?",
    "What color is my shirt?",
    "Is anyone standing behind me?",
    "Please speak more slowly.",
    "Set a timer for five minutes.",
    "How are you today?",
    "Where is the kitchen?",
    "I would like a glass of water.",
    "Can you help me find my keys?",
    "Say hello to my friend.",
    "What emotion do you think I am feeling?",
    "That's all for now, goodbye.",
    "Describe what you see.",
    "What is two plus two?",
    "Please wait here.",
    "Could you tell me what you see?",
    "I would like to go to the kitchen.",
    "Is the door open?",
    "Let's play a game.",
    "Remind me to call my mother tomorrow.",
    "How far away is the person on the left?",
    "Yes, please.",
    "No, that's wrong.",
    "Can you hear me?",
    "What did I just say?",
)

INCOMPLETE = (
    "Could you tell me what",
    "I would like to go to the",
    "Can you please",
    "What is the",
    "How many people are",
    "Please turn on the",
    "I want you to",
    "Tell me about the",
    "Do you see a",
    "Where did I put my",
    "Could you help me with",
    "What do you think about",
    "Is there a",
    "Set a timer for",
    "I was wondering if you could",
    "Can you describe the",
    "My name is",
    "Remind me to call",
    "What color is the",
    "Turn left and then",
    "I need to find the",
    "How far is it to the",
    "Why did you",
    "Let me tell you about my",
    "When you see someone wearing a",
    "If the door is open, then",
    "Please bring me the",
    "Do you know where the",
    "So what I want is",
    "Look at the person who is",
)

#: How each fragment goes on: the measurement also speaks the whole sentence and cuts it after the
#: fragment's last word, so the fragment ends with the prosody of a sentence that goes on.
CONTINUATIONS = {
    "Could you tell me what": "you see?",
    "I would like to go to the": "kitchen.",
    "Can you please": "open the door?",
    "What is the": "weather like today?",
    "How many people are": "in the room?",
    "Please turn on the": "lights.",
    "I want you to": "follow me.",
    "Tell me about the": "weather.",
    "Do you see a": "cup on the table?",
    "Where did I put my": "keys?",
    "Could you help me with": "my homework?",
    "What do you think about": "this picture?",
    "Is there a": "chair behind me?",
    "Set a timer for": "five minutes.",
    "I was wondering if you could": "help me.",
    "Can you describe the": "person on the left?",
    "My name is": "Anna.",
    "Remind me to call": "my mother tomorrow.",
    "What color is the": "car outside?",
    "Turn left and then": "go straight.",
    "I need to find the": "remote control.",
    "How far is it to the": "station?",
    "Why did you": "stop talking?",
    "Let me tell you about my": "day.",
    "When you see someone wearing a": "hat, say hello.",
    "If the door is open, then": "close it.",
    "Please bring me the": "red cup.",
    "Do you know where the": "bathroom is?",
    "So what I want is": "a cup of tea.",
    "Look at the person who is": "smiling.",
}

#: Clear in the measurement for both voices: complete ones at 0.97 or more (never `incomplete`), fragments
#: at 0.03 or less (`incomplete`).
CLEAR_COMPLETE = ("Please turn on the lights.", "Set a timer for five minutes.",
                  "Remind me to call my mother tomorrow.")
CLEAR_INCOMPLETE = ("If the door is open, then", "I was wondering if you could")

PRE_ROLL_MS = 300
PAUSE_MS = 200
_SILENCE_DBFS = -50.0


def trim_silence(x: F32, rate: int = ASR_RATE, frame_ms: int = 10) -> F32:
    """`x` without the TTS engine's own leading and trailing silence (10 ms frames under -50 dBFS)."""
    n = rate * frame_ms // 1000
    frames = len(x) // n
    if frames == 0:
        return x
    rms = np.sqrt(np.mean(np.square(x[:frames * n].reshape(frames, n), dtype=np.float64), axis=1))
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-9)) > _SILENCE_DBFS)
    if len(loud) == 0:
        return x
    return x[loud[0] * n:(loud[-1] + 1) * n]


def speak(engine: TtsEngine, text: str, voice: str) -> F32:
    """`text` spoken by `engine`, at 16 kHz float32, without leading or trailing silence."""
    pcm = np.concatenate(list(engine.synthesize(text, voice, 1.0)))
    return trim_silence(resample(to_float32(pcm), engine.sample_rate, ASR_RATE))


def utterance(speech: F32, pause_ms: int = PAUSE_MS) -> F32:
    """What the model sees at the first pause: pre-roll silence, the speech, `pause_ms` of silence."""
    pre = np.zeros(ASR_RATE * PRE_ROLL_MS // 1000, np.float32)
    post = np.zeros(ASR_RATE * pause_ms // 1000, np.float32)
    return np.concatenate([pre, speech, post])


# ----------------------------------------------------------------------------------------------------
# Pure logic


def test_decide_three_ways_and_bounds() -> None:
    assert decide(0.995, 0.99, 0.05) == "complete"
    assert decide(0.99, 0.99, 0.05) == "complete"
    assert decide(0.5, 0.99, 0.05) == "unsure"
    assert decide(0.05, 0.99, 0.05) == "unsure"
    assert decide(0.01, 0.99, 0.05) == "incomplete"
    assert decide(0.5, 0.5, 0.5) == "complete"  # one threshold: never unsure
    assert 0 < INCOMPLETE_BELOW < COMPLETE_AT <= 1
    with pytest.raises(ValueError):
        decide(0.5, 0.2, 0.3)
    with pytest.raises(ValueError):
        decide(0.5, 1.5, 0.1)


def test_model_window_keeps_the_last_8_s_padded_and_normalised() -> None:
    short = np.full(ASR_RATE, 0.5, np.float32)
    w = model_window(short)
    assert w.shape == (8 * ASR_RATE,) and w.dtype == np.float32
    assert abs(float(w.mean())) < 1e-5 and abs(float(w.std()) - 1) < 1e-3
    assert np.all(w[:7 * ASR_RATE] == w[0]) and w[0] < 0 < w[-1]  # zeros first, the audio at the end
    long = np.concatenate([np.ones(ASR_RATE, np.float32), np.linspace(-1, 1, 8 * ASR_RATE, dtype=np.float32)])
    assert np.allclose(model_window(long), model_window(long[ASR_RATE:]))
    assert np.all(model_window(np.zeros(10, np.float32)) == 0)  # silence stays finite


def test_missing_model_says_to_run_setup(tmp_path: Path) -> None:
    assert model_path(tmp_path) == tmp_path / "audio" / "smart-turn" / "smart-turn-v3.2-cpu.onnx"
    with pytest.raises(TurnModelNotFoundError, match="watus models setup"):
        TurnModel.from_cache(tmp_path)


def test_unreadable_model_is_a_turn_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(TurnModelError, match="could not load"):
        TurnModel(bad).load()


def test_setup_step_is_declared_without_tools() -> None:
    (step,) = [s for s in modelsetup.setup_steps() if s.name == "audio.smart-turn"]
    assert step.group == "audio" and modelsetup.SMART_TURN_ONNX in step.outputs
    assert not step.needs_tools  # pip download only: no tool venv, no pipecat installed


def _fake_wheel(folder: Path, members: dict[str, bytes]) -> Path:
    wheel = folder / "pipecat_ai-1.14.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return wheel


@pytest.mark.parametrize("members", [{}, {modelsetup._SMART_TURN_MEMBER: b"not the model"}])
def test_setup_step_rejects_a_changed_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            members: dict[str, bytes]) -> None:
    monkeypatch.setattr(modelsetup, "_download_wheel", lambda ctx, folder: _fake_wheel(folder, members))
    settings = ModelStoreSettings(cache_dir=tmp_path)
    ctx = StepContext(cache_dir=tmp_path, settings=settings, log_path=tmp_path / "setup.log",
                      tool_env=ToolEnv(tmp_path, settings, [], tmp_path / "setup.log"))
    with pytest.raises(SetupError, match="sha256" if members else "has no"):
        modelsetup._smart_turn(ctx)
    assert not model_path(tmp_path).exists()


# ----------------------------------------------------------------------------------------------------
# The real model


@pytest.fixture(scope="module")
def turn_model() -> TurnModel:
    path = model_path(cache_dir())
    if not path.is_file():
        pytest.skip(f"end-of-turn model not prepared ({path}): run `watus models setup --only audio`")
    model = TurnModel(path, threads=1)
    model.load()
    return model


@pytest.fixture(scope="module")
def piper() -> TtsEngine:
    from audio.tts.piper import PiperEngine

    engine = PiperEngine(threads=1)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def espeak() -> TtsEngine:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from audio.tts.espeak import EspeakEngine

    engine = EspeakEngine("en-us")
    engine.load()
    return engine


@pytest.fixture(params=["piper", "espeak"])
def voice(request: pytest.FixtureRequest) -> tuple[TtsEngine, str]:
    engine: TtsEngine = request.getfixturevalue(request.param)
    return engine, engine.voices()[0] if request.param == "piper" else "en-us"


def test_model_input_and_output(turn_model: TurnModel) -> None:
    feats = turn_model.features(np.zeros(3 * ASR_RATE, np.float32))
    assert feats.shape == (1, 80, 800) and feats.dtype == np.float32
    assert 0.0 <= turn_model.predict(np.zeros(3 * ASR_RATE, np.float32)) <= 1.0
    with pytest.raises(ValueError):
        turn_model.predict(np.zeros((2, ASR_RATE), np.float32))


@pytest.mark.parametrize("text", CLEAR_COMPLETE)
def test_clear_complete_is_not_held_back(turn_model: TurnModel, voice: tuple[TtsEngine, str], text: str) -> None:
    engine, name = voice
    prob = turn_model.predict(utterance(speak(engine, text, name)))
    assert prob >= 0.9, f"{engine.name}: {text!r} → {prob:.3f}"
    assert decide(prob, COMPLETE_AT, INCOMPLETE_BELOW) != "incomplete"


@pytest.mark.parametrize("text", CLEAR_INCOMPLETE)
def test_clear_fragment_is_incomplete(turn_model: TurnModel, voice: tuple[TtsEngine, str], text: str) -> None:
    engine, name = voice
    prob = turn_model.predict(utterance(speak(engine, text, name)))
    assert decide(prob, COMPLETE_AT, INCOMPLETE_BELOW) == "incomplete", f"{engine.name}: {text!r} → {prob:.3f}"


def test_no_fragment_is_called_complete(turn_model: TurnModel, piper: TtsEngine) -> None:
    """The property `complete_at` was chosen for: no fragment in the robot's voice is taken as a whole turn."""
    name = piper.voices()[0]
    probs = {t: turn_model.predict(utterance(speak(piper, t, name))) for t in INCOMPLETE}
    cut = {t: round(p, 3) for t, p in probs.items() if decide(p, COMPLETE_AT, INCOMPLETE_BELOW) == "complete"}
    assert not cut, f"fragments called complete: {cut}"
