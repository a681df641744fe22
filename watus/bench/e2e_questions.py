"""The e2e benchmark's spoken questions: text spoken by piper, text with a mid-sentence pause, or the
user's own recordings.

A question is given as a string (its spec), as `--questions` takes it:
- plain text: piper speaks it (the robot's default voice);
- text with pauses written `<500ms>` where the speaker stops mid-sentence ("Could you tell me, <500ms> what
  you see?"): the pieces are synthesised one by one, the silence at each join is trimmed, and exactly that
  much silence joins them, so the pause is known to the millisecond. These are the questions on which a
  turn that ends too early shows (a cut-off, `watus.bench.e2e_turns`);
- the path of a WAV file (ends in `.wav`): used as it is, mixed to mono and resampled to 16 kHz. A `.txt`
  beside it (same stem) holds the words said, for the transcript checks; without one only the utterance
  count can show a cut-off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audio.pcm import F32

#: A mid-sentence pause in a question's text.
PAUSE = re.compile(r"\s*<\s*(\d+)\s*ms\s*>\s*", re.IGNORECASE)
#: Pauses people make inside a sentence, and longer than the first-pause speculation (200 ms); the
#: longest of the built-in ones lie beyond the VAD's 512 ms silence tail on purpose.
MIN_PAUSE_MS, MAX_PAUSE_MS = 100, 3000
#: Built-in questions with a pause inside them (350-600 ms, around the VAD's 512 ms end-of-speech tail).
PAUSED_QUESTIONS = (
    "Could you tell me, <500ms> what you see?",
    "How many people <400ms> are standing in front of you?",
    "Hello Watus, I wanted to ask you, <600ms> what is your name?",
    "Tell me please, <350ms> what colour is the bus?",
)
#: Built-in long requests (5-7 s spoken): long enough for the audio service to transcribe their start
#: while the rest is spoken (`WATUS_AUDIO_ASR_INCREMENTAL`), so a run with it and one without show its gain.
LONG_QUESTIONS = (
    "Could you please look around the room and tell me how many people are sitting at the table right now?",
    "I left my keys somewhere in the kitchen this morning, so can you help me remember where I put them?",
    "Please describe everything you can see in front of you, starting with the things that are closest to you.",
    "My friend is coming over this evening, and I would like you to greet her at the door when she arrives.",
)
#: Samples below this magnitude at a join count as silence (piper's own silence is far quieter).
SILENCE_LEVEL = 0.004


class QuestionError(ValueError):
    """A question spec that cannot be used (a missing WAV file, a pause out of range)."""


@dataclass(frozen=True)
class Question:
    """One spoken question of the benchmark."""

    spec: str  # as given
    label: str  # for the report: the text with its pauses shown, or the WAV's file name
    text: str | None  # the words said; None: a WAV without a transcript beside it
    parts: tuple[str, ...] = ()  # the pieces piper speaks, in order (none for a WAV)
    pauses_ms: tuple[int, ...] = ()  # the silence between consecutive pieces
    wav: Path | None = None

    @property
    def paused(self) -> bool:
        """Whether the question has a known pause inside it."""
        return bool(self.pauses_ms)


def parse_question(spec: str) -> Question:
    """The question a spec describes (see the module docstring); raises `QuestionError`."""
    spec = spec.strip()
    if not spec:
        raise QuestionError("empty question")
    if spec.lower().endswith(".wav"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise QuestionError(f"question WAV not found: {path}")
        words = path.with_suffix(".txt")
        text = words.read_text(encoding="utf-8").strip() or None if words.is_file() else None
        return Question(spec, path.name, text, wav=path)
    pieces = PAUSE.split(spec)  # text, ms, text, ms, ... text
    parts = tuple(p.strip() for p in pieces[0::2])
    pauses = tuple(int(ms) for ms in pieces[1::2])
    if any(not p for p in parts):
        raise QuestionError(f"a pause must have words on both sides: {spec!r}")
    for ms in pauses:
        if not MIN_PAUSE_MS <= ms <= MAX_PAUSE_MS:
            raise QuestionError(f"pause of {ms} ms in {spec!r}: give {MIN_PAUSE_MS}-{MAX_PAUSE_MS} ms")
    label = parts[0] + "".join(f" ‹{ms} ms› {p}" for ms, p in zip(pauses, parts[1:], strict=True))
    return Question(spec, label, " ".join(parts), parts=parts, pauses_ms=pauses)


def voiced_bounds(audio: F32, level: float = SILENCE_LEVEL) -> tuple[int, int]:
    """First and one-past-last sample louder than `level` ((0, 0) for silence)."""
    import numpy as np

    loud = np.flatnonzero(np.abs(audio) > level)
    return (0, 0) if len(loud) == 0 else (int(loud[0]), int(loud[-1]) + 1)


def join_with_pauses(pieces: Sequence[F32], pauses_ms: Sequence[int], rate: int) -> F32:
    """The pieces end to end, each join trimmed of its silence and filled with exactly `pauses_ms` of it.

    The silence before the first piece and after the last is kept, as the voice made it."""
    import numpy as np

    if len(pauses_ms) != len(pieces) - 1:
        raise ValueError(f"{len(pieces)} pieces need {len(pieces) - 1} pauses, got {len(pauses_ms)}")
    out: list[F32] = []
    for i, piece in enumerate(pieces):
        start, end = voiced_bounds(piece)
        out.append(piece[start if i > 0 else 0:end if i < len(pieces) - 1 else len(piece)])
        if i < len(pauses_ms):
            out.append(np.zeros(int(pauses_ms[i] * rate / 1000), np.float32))
    return np.concatenate(out).astype(np.float32)


def question_audio(questions: Sequence[Question], folder: Path, *, variation: bool = False) -> dict[str, F32]:
    """16 kHz mono audio of each question (by spec): piper speaks each distinct piece once into `folder`
    (with its sampling noise only if `variation`: see `speech_workload.make_wavs`)."""
    import soundfile as sf

    from audio.devices.wavfile import read_mono
    from audio.pcm import ASR_RATE
    from watus.bench.speech_workload import make_wavs

    pieces = list(dict.fromkeys(p for q in questions for p in q.parts))
    voiced = make_wavs(folder, tuple(pieces), "q", variation=variation) if pieces else []
    spoken = {text: sf.read(path, dtype="float32")[0] for path, text, _ in voiced}
    out: dict[str, F32] = {}
    for q in questions:
        if q.wav is not None:
            out[q.spec] = read_mono(q.wav, ASR_RATE)
        else:
            out[q.spec] = join_with_pauses([spoken[p] for p in q.parts], q.pauses_ms, ASR_RATE)
    return out
