"""What the e2e benchmark shows the processes: the spoken questions (a microphone folder of piper's voice
and the user's recordings, `watus.bench.e2e_questions`), which question a transcript most resembles, and
the image or video the vision service watches.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from watus.bench.e2e_questions import Question, question_audio

#: Spoken first in each mode and not timed: the first real turn then meets warm caches everywhere.
WARMUP_QUESTION = "Hi Watus, are you there?"


def make_mic_folder(folder: Path, sequence: list[Question], lead_in_s: float, *,
                    variation: bool = False) -> list[float]:
    """One 16 kHz WAV per spoken question in play order (the first led by `lead_in_s` of silence): piper's
    voice for text (each piece synthesised once; the same audio in every run unless `variation`), the
    user's recording for a WAV question (mono, 16 kHz); returns the seconds of audio of each question
    (without the lead-in)."""
    import numpy as np
    import soundfile as sf

    from audio.pcm import ASR_RATE

    audio = question_audio(sequence, folder / "voice", variation=variation)
    mic = folder / "mic"
    shutil.rmtree(mic, ignore_errors=True)
    mic.mkdir(parents=True)
    for i, q in enumerate(sequence):
        pcm = audio[q.spec]
        if i == 0:
            pcm = np.concatenate([np.zeros(int(lead_in_s * ASR_RATE), np.float32), pcm])
        sf.write(mic / f"{i:04d}.wav", pcm, ASR_RATE, subtype="PCM_16")
    return [len(audio[q.spec]) / ASR_RATE for q in sequence]


def closest_question(transcript: str, questions: list[str]) -> tuple[str, float]:
    """The question a transcript most likely is, and its word error rate against it."""
    from watus.bench.speech_workload import word_error_rate

    scored = [(word_error_rate(q, transcript), q) for q in questions]
    wer, question = min(scored)
    return question, round(wer, 3)


def vision_folder(source: Path, out_dir: Path) -> Path:
    """An image is shown to the vision service as a one-image folder (looped); a video file is used as is."""
    from vision.sources import IMAGE_SUFFIXES

    if source.is_dir() or source.suffix.lower() not in IMAGE_SUFFIXES:
        return source
    folder = out_dir / "e2e-vision-source"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(source, folder / source.name)
    return folder
