"""Wake-word detection on the 16 kHz microphone stream with microWakeWord (`pymicro-wakeword`, Apache-2.0).

The wheel ships four English models (`BUILTIN_MODELS`: okay_nabu, hey_jarvis, alexa, hey_mycroft), each a
TFLite file with a JSON config beside it; any other microWakeWord model is named by the path of its JSON.
The library turns 10 ms chunks of 16-bit PCM into 40 log-mel features (`MicroWakeWordFeatures`), runs the
model every `stride` chunks (30 ms for these models) and averages the last `sliding_window_size`
outputs; the model fires when that mean exceeds the cutoff of its config (or the one given here). One
inference costs well under a millisecond on a CPU core, so the detector runs in the listener thread as the
audio arrives, like the VAD.

On synthetic speech (piper and espeak-ng) the models differ a lot: docs/wakeword.md has the measurements,
tests/test_audio_wake.py the phrases.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from audio.pcm import ASR_RATE, F32
from watus.core.wire.audio import WakeWord

if TYPE_CHECKING:
    from audio.events import EventBus
    from audio.metrics import AudioMetrics

log = logging.getLogger(__name__)

#: The models inside the pymicro-wakeword wheel (`pymicro_wakeword.Model` values).
BUILTIN_MODELS: tuple[str, ...] = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft")
#: The library's chunk: 10 ms at 16 kHz.
CHUNK_SAMPLES = ASR_RATE // 100
#: After a hit the detector stays quiet this long, so that one spoken wake word gives one hit (the sliding
#: mean stays above the cutoff for several inferences, and a wake word lasts under a second).
DEFAULT_REFRACTORY_S = 2.0
# A TFLite flatbuffer carries this file identifier at bytes 4..8.
_TFLITE_ID = b"TFL3"
_INSTALL_HINT = "pip install 'pymicro-wakeword>=2.5,<3' (part of 'watus[audio]')"


class WakeWordError(Exception):
    """The wake-word model could not be loaded (missing package, unknown name, bad model file)."""


@dataclass(frozen=True)
class WakeHit:
    """One detection. `offset_samples` counts the samples fed since the last `reset()` up to the end of the
    10 ms chunk whose inference crossed the cutoff (the end of the wake word, give or take 30 ms)."""

    model: str
    phrase: str
    probability: float  # the sliding-window mean that crossed the cutoff
    offset_samples: int


def builtin_phrase(name: str) -> str:
    """What a built-in model listens for, in lower case: `okay_nabu` → "okay nabu"."""
    if name not in BUILTIN_MODELS:
        raise WakeWordError(f"unknown built-in wake-word model {name!r}: choose one of {', '.join(BUILTIN_MODELS)}")
    return name.replace("_", " ")


def _builtin_config(name: str) -> Path:
    import pymicro_wakeword

    return Path(pymicro_wakeword.__file__).parent / "models" / f"{name}.json"


def _resolve_config(model: str) -> Path:
    """The JSON config of a built-in name or of a path; a clear `WakeWordError` for anything else."""
    if model in BUILTIN_MODELS:
        path = _builtin_config(model)
        if not path.is_file():
            raise WakeWordError(f"built-in wake-word model {model!r} is missing from the pymicro-wakeword "
                                f"install ({path}): reinstall it, {_INSTALL_HINT}")
        return path
    path = Path(model).expanduser()
    if path.suffix != ".json" or not path.is_file():
        raise WakeWordError(f"unknown wake-word model {model!r}: use a built-in name "
                            f"({', '.join(BUILTIN_MODELS)}) or the path of a microWakeWord model .json "
                            "(with its .tflite beside it)")
    return path


def _check_config(path: Path) -> None:
    """Read the config before the library does: a missing or corrupt TFLite file makes TFLite's C code crash
    the process (a segmentation fault, not an exception)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        tflite = path.parent / config["model"]
        micro = config["micro"]
        float(micro["probability_cutoff"])
        int(micro["sliding_window_size"])
        str(config["wake_word"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WakeWordError(f"{path} is not a microWakeWord model config (needs model, wake_word, "
                            f"micro.probability_cutoff, micro.sliding_window_size): {e}") from e
    if not tflite.is_file():
        raise WakeWordError(f"the model file {tflite} named by {path} is missing")
    with tflite.open("rb") as f:
        head = f.read(8)
    if head[4:8] != _TFLITE_ID:
        raise WakeWordError(f"{tflite} is not a TFLite model (no {_TFLITE_ID!r} identifier)")


class WakeWordDetector:
    """One microWakeWord model over one 16 kHz mono stream, fed with `process` as the audio arrives.

    Not thread-safe: it keeps the stream's state (features, the model's streaming state, the samples of an
    unfinished 10 ms chunk), so it is used from one thread, the listener's, one instance per stream.
    `process` costs a feature frame per 10 ms and an inference per 30 ms, well under a millisecond per
    call of 32 ms audio on a CPU core.
    """

    def __init__(self, model: str, cutoff: float | None = None, *,
                 refractory_s: float = DEFAULT_REFRACTORY_S) -> None:
        if cutoff is not None and not 0.0 < cutoff < 1.0:
            raise ValueError(f"cutoff must be in (0, 1), got {cutoff}")
        if refractory_s < 0:
            raise ValueError(f"refractory_s must be >= 0, got {refractory_s}")
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures
        except ImportError as e:
            raise WakeWordError(f"wake-word detection needs pymicro-wakeword: {_INSTALL_HINT}") from e
        config = _resolve_config(model)
        _check_config(config)
        try:
            self._mww: Any = MicroWakeWord.from_config(config)
        except (OSError, ValueError, RuntimeError) as e:  # no TFLite library for this platform, bad tensors
            raise WakeWordError(f"could not load the wake-word model {config}: {e}") from e
        self._features: Any = MicroWakeWordFeatures()
        self.model = model if model in BUILTIN_MODELS else str(self._mww.id)
        self.phrase = str(self._mww.wake_word).lower()
        self.cutoff = float(self._mww.probability_cutoff) if cutoff is None else float(cutoff)
        self.refractory_samples = round(refractory_s * ASR_RATE)
        self._pending = np.zeros(0, dtype=np.float32)
        self._fed = 0  # samples given to the library since reset
        self._quiet_until = 0  # no hit before this sample offset
        self.max_probability = 0.0
        log.info("wake word %r (%s) loaded, cutoff %.2f", self.phrase, config.name, self.cutoff)

    def reset(self) -> None:
        """Forget the stream: features, the model's state (the library reloads the model), counters."""
        self._features.reset()
        self._mww.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._fed = 0
        self._quiet_until = 0
        self.max_probability = 0.0

    def process(self, samples: npt.ArrayLike) -> WakeHit | None:
        """Feed 16 kHz mono float samples in [-1, 1], any length; the first hit in them, else None.

        Samples that do not fill a 10 ms chunk wait for the next call, so the result does not depend on how
        the stream is cut into blocks. Non-finite samples count as silence.
        """
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        whole = len(x) - len(x) % CHUNK_SAMPLES
        self._pending = x[whole:].copy()
        if whole == 0:
            return None
        x = np.nan_to_num(x[:whole], nan=0.0, posinf=1.0, neginf=-1.0)
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        step = CHUNK_SAMPLES * 2
        hit: WakeHit | None = None
        for start in range(0, len(pcm), step):
            self._fed += CHUNK_SAMPLES
            for feats in self._features.process_streaming(pcm[start:start + step]):
                prob = self._mww.process_streaming_prob(feats)
                if prob is None:
                    continue
                prob = float(prob)
                self.max_probability = max(self.max_probability, prob)
                if prob > self.cutoff and hit is None and self._fed >= self._quiet_until:
                    hit = WakeHit(self.model, self.phrase, prob, self._fed)
                    self._quiet_until = self._fed + self.refractory_samples
                    log.debug("wake word %r at %d samples (p=%.3f)", self.phrase, self._fed, prob)
        return hit


class WakeDetector(Protocol):
    """A wake-word model over the 16 kHz stream, as the listener uses it (`WakeWordDetector`)."""

    def process(self, samples: F32) -> Any: ...


def listen_for_wake(wake: WakeDetector, samples: F32, metrics: AudioMetrics, bus: EventBus, captured_ns: int) -> None:
    """One block of the microphone through the wake-word model; a hit is counted and published (a failing
    model is logged and listening goes on)."""
    try:
        hit = wake.process(samples)
    except Exception:
        log.exception("wake word model failed on a block")
        return
    if hit is not None:
        metrics.wake_words.labels(hit.model).inc()
        log.info("wake word %r (%s, p=%.2f)", hit.phrase, hit.model, hit.probability)
        bus.publish_threadsafe(WakeWord(t_ns=time.monotonic_ns(), model=hit.model, phrase=hit.phrase,
                                        probability=round(float(hit.probability), 3), captured_ns=captured_ns))
