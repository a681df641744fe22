"""Wake-word detection (`audio.wake`): loading and its errors, odd input, and the four built-in microWakeWord
models on their phrases spoken by the robot's voice (piper) and by espeak-ng, with 1 s of silence around.

`FIRES` lists the (model, voice) pairs that fired on every rendition measured (piper samples noise, so
every synthesis is another rendition); hey_jarvis spoken by espeak-ng never fires (max 0.07) and is left
out, and okay_nabu spoken by piper misses about 1 rendition in 20 (under its 0.85 cutoff), so it is
asserted with espeak-ng only. `python -m tests.test_audio_wake` prints the table of docs/wakeword.md.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from audio.pcm import ASR_RATE, F32, resample, to_float32
from audio.wake import BUILTIN_MODELS, CHUNK_SAMPLES, WakeHit, WakeWordDetector, WakeWordError, builtin_phrase

if TYPE_CHECKING:  # the engines are imported where speech is made: the loading tests need no TTS
    from audio.tts.base import TtsEngine

NEUTRAL = "What time is it?"
#: (model, voice) pairs that fired on every rendition in the measurement (docs/wakeword.md).
FIRES = (
    ("alexa", "piper"), ("alexa", "espeak"),
    ("hey_mycroft", "piper"), ("hey_mycroft", "espeak"),
    ("hey_jarvis", "piper"),
    ("okay_nabu", "espeak"),
)
#: The model the other tests use: it fires on both voices at the top of its range (0.996).
DEFAULT_MODEL = "alexa"
PAD_S = 1.0


# ----------------------------------------------------------------------------------------------------
# Speech


def make_piper() -> TtsEngine:
    from audio.tts.piper import PiperEngine

    engine = PiperEngine(threads=1)
    engine.load()
    return engine


def make_espeak() -> TtsEngine:
    from audio.tts.espeak import EspeakEngine

    engine = EspeakEngine("en-us")
    engine.load()
    return engine


def padded(speech: F32, pad_s: float = PAD_S) -> F32:
    pad = np.zeros(round(pad_s * ASR_RATE), np.float32)
    return np.concatenate([pad, speech, pad])


def speak(engine: TtsEngine, text: str) -> F32:
    """`text` spoken by `engine` at 16 kHz float32 (with the engine's own short silences)."""
    voice = engine.voices()[0] if engine.name == "piper" else "en-us"
    pcm = np.concatenate(list(engine.synthesize(text, voice, 1.0)))
    return resample(to_float32(pcm), engine.sample_rate, ASR_RATE)


def run(det: WakeWordDetector, audio: F32, block: int | None = None) -> list[WakeHit]:
    """All hits of `det` on `audio` from a fresh start, fed in one piece or in blocks of `block` samples."""
    det.reset()
    step = block or max(len(audio), 1)
    hits = [det.process(audio[i:i + step]) for i in range(0, len(audio), step)]
    return [h for h in hits if h is not None]


@pytest.fixture(scope="module")
def piper() -> TtsEngine:
    return make_piper()


@pytest.fixture(scope="module")
def espeak() -> TtsEngine:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return make_espeak()


@pytest.fixture(scope="module")
def detectors() -> dict[str, WakeWordDetector]:
    return {m: WakeWordDetector(m) for m in BUILTIN_MODELS}


@pytest.fixture(scope="module")
def spoken(piper: TtsEngine, espeak: TtsEngine) -> dict[tuple[str, str], F32]:
    """One rendition of each built-in phrase and of `NEUTRAL` per voice, padded with silence."""
    engines = {"piper": piper, "espeak": espeak}
    texts = [builtin_phrase(m) for m in BUILTIN_MODELS] + [NEUTRAL]
    return {(text, voice): padded(speak(engine, text)) for voice, engine in engines.items() for text in texts}


# ----------------------------------------------------------------------------------------------------
# Loading and input


def test_builtin_names_and_phrases() -> None:
    from pymicro_wakeword import Model

    assert set(BUILTIN_MODELS) == {m.value for m in Model}
    assert builtin_phrase("okay_nabu") == "okay nabu" and builtin_phrase("alexa") == "alexa"
    with pytest.raises(WakeWordError, match="hey_jarvis"):
        builtin_phrase("hey_siri")


def test_detector_reads_its_config() -> None:
    det = WakeWordDetector("hey_jarvis")
    assert (det.model, det.phrase, det.cutoff, det.max_probability) == ("hey_jarvis", "hey jarvis", 0.97, 0.0)
    assert WakeWordDetector("okay_nabu", cutoff=0.5).cutoff == 0.5


def test_model_from_a_json_path(tmp_path: Path) -> None:
    import pymicro_wakeword

    models = Path(pymicro_wakeword.__file__).parent / "models"
    for suffix in (".json", ".tflite"):
        shutil.copy(models / f"alexa{suffix}", tmp_path / f"robot{suffix}")
    (tmp_path / "robot.json").write_text((tmp_path / "robot.json").read_text().replace('"alexa.tflite"',
                                                                                     '"robot.tflite"'))
    det = WakeWordDetector(str(tmp_path / "robot.json"))
    assert (det.model, det.phrase, det.cutoff) == ("robot", "alexa", 0.9)


def test_unknown_model_lists_the_builtin_names(tmp_path: Path) -> None:
    with pytest.raises(WakeWordError, match="okay_nabu, hey_jarvis, alexa, hey_mycroft"):
        WakeWordDetector("hey_robot")
    with pytest.raises(WakeWordError, match="unknown wake-word model"):
        WakeWordDetector(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("config", ['{"model": "x.tflite"}', "not json",
                                    '{"model": "x.tflite", "wake_word": "x", "micro": '
                                    '{"probability_cutoff": 0.9, "sliding_window_size": 5}}'])
def test_bad_model_config_is_a_wake_word_error(tmp_path: Path, config: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(config)
    with pytest.raises(WakeWordError, match=r"config|missing"):
        WakeWordDetector(str(path))


@pytest.mark.parametrize("data", [b"", b"garbage" * 100])
def test_corrupt_tflite_is_a_wake_word_error_not_a_crash(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "x.tflite").write_bytes(data)
    (tmp_path / "x.json").write_text('{"model": "x.tflite", "wake_word": "x", "micro": '
                                     '{"probability_cutoff": 0.9, "sliding_window_size": 5}}')
    with pytest.raises(WakeWordError, match="not a TFLite model"):
        WakeWordDetector(str(tmp_path / "x.json"))


def test_missing_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymicro_wakeword", None)  # what `import` sees when it is not installed
    with pytest.raises(WakeWordError, match="pip install 'pymicro-wakeword"):
        WakeWordDetector("alexa")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cutoff"):
        WakeWordDetector("alexa", cutoff=1.5)
    with pytest.raises(ValueError, match="refractory"):
        WakeWordDetector("alexa", refractory_s=-1)


def test_odd_input_never_raises(detectors: dict[str, WakeWordDetector]) -> None:
    det = detectors[DEFAULT_MODEL]
    det.reset()
    odd: list[object] = [np.zeros(0, np.float32), np.zeros(1, np.float32), np.zeros(CHUNK_SAMPLES - 1),
                         np.zeros((2, 333), np.float64), [0.0] * 7, np.full(500, np.nan, np.float32),
                         np.full(999, np.inf, np.float32), np.full(1234, 3.0, np.float32), np.int16(0)]
    for x in odd:
        assert det.process(x) is None  # type: ignore[arg-type]
    assert 0 <= det.max_probability < det.cutoff


def test_silence_never_fires(detectors: dict[str, WakeWordDetector]) -> None:
    silence = np.zeros(5 * ASR_RATE, np.float32)
    for det in detectors.values():
        assert run(det, silence, block=512) == []
        assert det.max_probability < 0.1


# ----------------------------------------------------------------------------------------------------
# Real models on synthetic speech


@pytest.mark.parametrize(("model", "voice"), FIRES)
def test_model_fires_on_its_phrase(detectors: dict[str, WakeWordDetector], spoken: dict[tuple[str, str], F32],
                                   model: str, voice: str) -> None:
    audio = spoken[builtin_phrase(model), voice]
    det = detectors[model]
    hits = run(det, audio, block=512)
    assert len(hits) == 1, f"{model} on {voice}: max {det.max_probability:.3f}"
    (hit,) = hits
    assert (hit.model, hit.phrase) == (model, builtin_phrase(model))
    assert det.cutoff < hit.probability <= det.max_probability <= 1.0
    # Fired after the speech began, and at most 0.3 s after its end: the mean of 5 inferences 30 ms apart
    # (measured: up to 170 ms after the TTS output's end on "alexa").
    assert PAD_S * ASR_RATE < hit.offset_samples <= len(audio) - (PAD_S - 0.3) * ASR_RATE


@pytest.mark.parametrize(("model", "voice"), FIRES)
def test_no_other_model_fires_on_a_phrase(detectors: dict[str, WakeWordDetector],
                                          spoken: dict[tuple[str, str], F32], model: str, voice: str) -> None:
    audio = spoken[builtin_phrase(model), voice]
    fired = {other: run(det, audio) for other, det in detectors.items() if other != model}
    assert fired == {other: [] for other in fired}


@pytest.mark.parametrize("voice", ["piper", "espeak"])
def test_no_model_fires_on_a_neutral_sentence(detectors: dict[str, WakeWordDetector],
                                              spoken: dict[tuple[str, str], F32], voice: str) -> None:
    audio = spoken[NEUTRAL, voice]
    fired = {m: (run(det, audio), det.max_probability) for m, det in detectors.items()}
    assert all(not hits for hits, _ in fired.values()), fired


@pytest.mark.parametrize(("model", "voice"), [("alexa", "piper"), ("hey_jarvis", "piper"), ("okay_nabu", "espeak")])
def test_block_size_does_not_change_the_result(detectors: dict[str, WakeWordDetector],
                                               spoken: dict[tuple[str, str], F32], model: str, voice: str) -> None:
    audio = spoken[builtin_phrase(model), voice]
    det = detectors[model]
    whole = run(det, audio)
    whole_max = det.max_probability
    for block in (333, 160, 1, 4096):
        if block == 1:
            audio_1 = audio[:ASR_RATE // 2]  # one sample at a time: only half a second, for time's sake
            assert run(det, audio_1, block=1) == run(det, audio_1)
            continue
        assert run(det, audio, block=block) == whole, block
        assert det.max_probability == whole_max
    assert len(whole) == 1


def test_cutoff_overrides_the_config(detectors: dict[str, WakeWordDetector],
                                     spoken: dict[tuple[str, str], F32]) -> None:
    audio = spoken[builtin_phrase(DEFAULT_MODEL), "piper"]
    strict = WakeWordDetector(DEFAULT_MODEL, cutoff=0.999)  # above the quantised output's top (255/256)
    assert run(strict, audio) == []
    assert strict.max_probability > detectors[DEFAULT_MODEL].cutoff


def test_one_hit_per_wake_word_and_again_after_the_refractory_time(
        detectors: dict[str, WakeWordDetector], espeak: TtsEngine) -> None:
    det = detectors[DEFAULT_MODEL]
    speech = speak(espeak, builtin_phrase(DEFAULT_MODEL))  # under 1 s

    def twice(apart_s: float) -> F32:
        """The wake word twice, its starts `apart_s` apart (so are the hits, within a chunk or two)."""
        gap = np.zeros(round(apart_s * ASR_RATE) - len(speech), np.float32)
        return padded(np.concatenate([speech, gap, speech]))

    assert len(speech) < ASR_RATE
    assert len(run(det, twice(3.0), block=512)) == 2
    assert len(run(det, twice(1.2), block=512)) == 1  # within the 2 s after the first hit
    assert len(run(WakeWordDetector(DEFAULT_MODEL, refractory_s=0.5), twice(1.2), block=512)) == 2


@pytest.mark.parametrize("model", sorted({m for m, v in FIRES if v == "piper"}))
def test_piper_renditions_fire(detectors: dict[str, WakeWordDetector], piper: TtsEngine, model: str) -> None:
    """Ten more renditions by the robot's voice (about 0.5 s per model)."""
    det = detectors[model]
    probs = []
    for _ in range(10):
        hits = run(det, padded(speak(piper, builtin_phrase(model))), block=512)
        probs.append(det.max_probability)
        assert len(hits) == 1, probs


# ----------------------------------------------------------------------------------------------------
# The measurement of docs/wakeword.md: `python -m tests.test_audio_wake [renditions]`

#: Sentences that come near a wake word for some model (found by trying a few dozen): measured, not asserted.
CONFUSABLE = ("Okay, now look at me.", "I like my car.", "Alex is here.", "Hey, are you there?")


def measure(renditions: int = 20) -> str:
    """Two markdown tables: each model on its own phrase; every model on everything else (false alarms).

    piper speaks each text `renditions` times (another rendition each time), espeak-ng once (it says a text
    the same way every time). A cell is the range of the max probability over renditions, and how many fired.
    """
    engines = {"piper": make_piper()}
    if shutil.which("espeak-ng"):
        engines["espeak"] = make_espeak()
    dets = {m: WakeWordDetector(m) for m in BUILTIN_MODELS}
    texts = [*(builtin_phrase(m) for m in BUILTIN_MODELS), NEUTRAL, *CONFUSABLE]
    # (text, voice) -> model -> [(fired, max probability)] over renditions
    scores: dict[tuple[str, str], dict[str, list[tuple[bool, float]]]] = {}
    for voice, engine in engines.items():
        for text in texts:
            cell: dict[str, list[tuple[bool, float]]] = {m: [] for m in BUILTIN_MODELS}
            for _ in range(renditions if voice == "piper" else 1):
                audio = padded(speak(engine, text))
                for m, det in dets.items():
                    cell[m].append((bool(run(det, audio, block=512)), det.max_probability))
            scores[text, voice] = cell
    silence = {m: [(bool(run(det, np.zeros(5 * ASR_RATE, np.float32), block=512)), det.max_probability)]
               for m, det in dets.items()}

    def fmt(results: list[tuple[bool, float]]) -> str:
        probs = [p for _, p in results]
        spread = f"{min(probs):.3f}–{max(probs):.3f}" if len(probs) > 1 else f"{probs[0]:.3f}"
        fired = sum(f for f, _ in results)
        return f"{'**' if fired else ''}{fired}/{len(results)}{'**' if fired else ''}, {spread}"

    own = ["| model | cutoff | phrase | voice | fired, max probability |", "|---|---|---|---|---|"]
    for m in BUILTIN_MODELS:
        for voice in engines:
            own.append(f"| {m} | {dets[m].cutoff:.2f} | “{builtin_phrase(m)}” | {voice} | "
                       f"{fmt(scores[builtin_phrase(m), voice][m])} |")
    others = ["| audio | voice | " + " | ".join(BUILTIN_MODELS) + " |", "|---|---|" + "---|" * len(BUILTIN_MODELS)]
    for (text, voice), cell in scores.items():
        others.append(f"| “{text}” | {voice} | " + " | ".join(
            "(own phrase)" if text == builtin_phrase(m) else fmt(cell[m]) for m in BUILTIN_MODELS) + " |")
    others.append("| 5 s silence | – | " + " | ".join(fmt(silence[m]) for m in BUILTIN_MODELS) + " |")
    return "\n".join(own) + "\n\n" + "\n".join(others)


if __name__ == "__main__":
    print(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
