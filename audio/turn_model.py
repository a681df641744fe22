"""End-of-turn prediction: has the speaker finished their turn, or only paused mid-sentence?

Smart Turn v3.2 (pipecat's BSD-2-Clause model, a Whisper-tiny encoder with a classifier head, as ONNX)
hears the last 8 s of an utterance and gives the probability that the turn is complete. `watus models
setup` puts the file in the model cache (`audio.modelsetup`); nothing is downloaded here.

The input follows pipecat's own inference (`LocalSmartTurnAnalyzerV3`) exactly: 16 kHz float audio,
the last 8 s kept (zero-padded at the start when shorter), the whole 8 s buffer normalised to zero mean
and unit variance, then an 80 × 800 Whisper log-mel (faster-whisper's `FeatureExtractor` with
`chunk_length=8` and no extra padding gives the same features as pipecat's vendored extractor, to
5e-7), fed as `input_features` [1, 80, 800]; its single output (named `logits`) is already the
probability, as pipecat reads it.

The probability alone is not a decision: on synthetic speech the model scores some complete questions
very low and some fragments as high as any complete turn, so `decide` maps it to three answers with two
thresholds measured on many phrases (`RECOMMENDED_*`, the phrases are in the tests): `complete` (end
the turn now), `incomplete` (wait longer for more speech), `unsure` (keep the usual end-of-speech silence).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from audio.modelsetup import SMART_TURN_ONNX
from audio.pcm import ASR_RATE, F32

log = logging.getLogger(__name__)

TurnDecision = Literal["complete", "incomplete", "unsure"]

#: The model hears this much of the end of an utterance, at `ASR_RATE`.
WINDOW_S = 8
WINDOW_SAMPLES = WINDOW_S * ASR_RATE
INPUT_NAME = "input_features"
#: Thresholds measured on synthetic speech (piper, the robot's voice, 5 renditions of each phrase, and
#: espeak-ng; 200 ms of silence after the speech; the phrases are in tests/test_audio_turn_model.py). The
#: output tops out near 0.99 and fragments cut mid-sentence reach 0.985 (0.989 after a 300 ms pause), so no
#: lower `complete_at` is safe from cutting someone off: on these voices `complete` almost never fires.
#: `incomplete` is the model's own decision boundary (pipecat reads 0.5 as "not finished"): below it lie half
#: the fragments (piper 17 of 34, espeak 14 of 34; "Hello Watus, I wanted to ask you," 0.39) and 9 % of
#: piper's complete phrases (27 % of espeak's). A complete turn called incomplete only waits
#: `turn_incomplete_wait_ms` instead of the silence tail; with preemptive replies that wait overlaps
#: the reply's own preparation (~1 s on 2 cores), so it costs little, while a fragment ended early costs the turn.
RECOMMENDED_COMPLETE_AT = 0.99
RECOMMENDED_INCOMPLETE_BELOW = 0.5
#: `turn_unsure_silence_ms` where the agent replies preemptively: the held reply is prepared in that silence
#: anyway, and piper's own pauses mid-sentence are up to 800 ms of silence to the VAD (docs/benchmarks.md).
RECOMMENDED_PREEMPTIVE_UNSURE_SILENCE_MS = 1000
#: Words an English sentence does not end with (articles, possessives, conjunctions, copulas): a speculative
#: transcript ending in one is a person going on. Prepositions are left out because questions end with them
#: ("where are you from?", "what is it for?"), and so are the particles of requests ("turn it on").
TRAILING_WORDS = frozenset((
    "the", "a", "an", "my", "your", "his", "her", "their", "our", "its", "of", "and", "or", "but", "nor",
    "because", "if", "than", "then", "is", "are", "was", "were", "be", "been", "being", "um", "uh", "er"))
# pipecat's variance epsilon in the waveform normalisation (transformers' WhisperFeatureExtractor value).
_NORM_EPS = 1e-7


class EndOfTurn(Protocol):
    """The end-of-turn decision as the listener uses it (`audio.runtime.ModelEndOfTurn`)."""

    def decide(self, audio: F32) -> tuple[str, float, float]:
        """(complete | incomplete | unsure, probability complete, inference ms) for the utterance so far."""
        ...

    def trails_off(self, text: str) -> bool:
        """Whether a speculative transcript stops where a sentence cannot (the turn then waits longer)."""
        ...


class TurnModelError(Exception):
    """The turn model could not be loaded or run."""


class TurnModelNotFoundError(TurnModelError):
    """The model file is not in the cache; the message says how to prepare it."""


def model_path(cache_dir: Path) -> Path:
    """Where `watus models setup` puts the Smart Turn model in the cache."""
    return Path(cache_dir).expanduser() / SMART_TURN_ONNX


def decide(prob: float, complete_at: float, incomplete_below: float) -> TurnDecision:
    """`complete` at or above `complete_at`, `incomplete` below `incomplete_below`, else `unsure`."""
    if not 0.0 <= incomplete_below <= complete_at <= 1.0:
        raise ValueError(f"need 0 <= incomplete_below <= complete_at <= 1, got {incomplete_below}, {complete_at}")
    if prob >= complete_at:
        return "complete"
    if prob < incomplete_below:
        return "incomplete"
    return "unsure"


def trails_off(text: str) -> bool:
    """The words stop where a sentence cannot: the last word is in `TRAILING_WORDS`, or Whisper wrote the
    trailing ellipsis it gives speech that breaks off ("I would like to go to the..."). Whisper's other
    punctuation at a pause says little (it ends most fragments with "." or "?"), so it is not read."""
    stripped = text.strip()
    if stripped.endswith(("...", "\u2026")):
        return True
    words = re.findall(r"[a-z']+", stripped.lower())
    return bool(words) and words[-1] in TRAILING_WORDS


def model_window(audio: F32) -> F32:
    """The last `WINDOW_S` of `audio` (16 kHz), zero-padded at the start, normalised as a whole."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)[-WINDOW_SAMPLES:]
    if len(x) < WINDOW_SAMPLES:
        x = np.pad(x, (WINDOW_SAMPLES - len(x), 0))
    # In float32, as pipecat does: the padding counts in the mean and the variance.
    return ((x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)).astype(np.float32)


class TurnModel:
    """Smart Turn v3 on ONNX Runtime (CPU). Construct (checks the file), `load()` once, then `predict`.

    `predict` blocks for tens of ms on a CPU core: call it from a worker thread, never on the event loop.
    It holds no state between calls (an ONNX Runtime session may run from several threads).
    """

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise TurnModelNotFoundError(
                f"end-of-turn model not found: {self.path}. Run `watus models setup --only audio` once "
                "(it takes the Smart Turn model out of the pipecat-ai wheel into the model cache).")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self._session: Any = None
        self._features: Any = None

    @classmethod
    def from_cache(cls, cache_dir: Path, *, threads: int = 1) -> TurnModel:
        return cls(model_path(cache_dir), threads=threads)

    def load(self) -> None:
        """Open the model and warm it up with one call (the first run of a session is the slow one)."""
        import onnxruntime
        from faster_whisper.feature_extractor import FeatureExtractor

        opts = onnxruntime.SessionOptions()
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = onnxruntime.InferenceSession(str(self.path), sess_options=opts,
                                                   providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT's own errors (InvalidProtobuf, Fail, ...) derive from Exception only
            raise TurnModelError(f"could not load the end-of-turn model {self.path}: {e}") from e
        names = [i.name for i in session.get_inputs()]
        if names != [INPUT_NAME]:
            raise TurnModelError(f"{self.path} takes inputs {names}, expected [{INPUT_NAME!r}]")
        self._features = FeatureExtractor(feature_size=80, sampling_rate=ASR_RATE, chunk_length=WINDOW_S)
        self._session = session
        self.predict(np.zeros(ASR_RATE, dtype=np.float32))
        log.info("end-of-turn model %s loaded (%d thread(s))", self.path.name, self.threads)

    def ready(self) -> bool:
        return self._session is not None

    def features(self, audio: F32) -> F32:
        """The model input [1, 80, 800] for the utterance audio so far (16 kHz float32)."""
        if self._features is None:
            raise TurnModelError("end-of-turn model not loaded")
        # padding=0: the window is exactly 8 s; faster-whisper's default 160 extra samples would give
        # 801 frames, and last frames that differ from pipecat's.
        mel = self._features(model_window(audio), padding=0)
        return np.asarray(mel, dtype=np.float32)[np.newaxis]

    def predict(self, audio: F32) -> float:
        """Probability that the turn is complete, from the utterance audio so far (16 kHz float32 in [-1, 1])."""
        if self._session is None:
            raise TurnModelError("end-of-turn model not loaded")
        if np.ndim(audio) != 1:
            raise ValueError(f"expected mono 1-D audio, got shape {np.shape(audio)}")
        inputs = {INPUT_NAME: self.features(audio)}
        outputs = self._session.run(None, inputs)
        return float(np.asarray(outputs[0])[0].item())
