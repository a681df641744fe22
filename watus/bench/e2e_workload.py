"""What the e2e benchmark shows the processes: the spoken questions (a microphone folder of piper's voice),
which question a transcript was, and the image or video the vision service watches.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Spoken first in each mode and not timed: the first real turn then meets warm caches everywhere.
WARMUP_QUESTION = "Hi Watus, are you there?"


def make_mic_folder(folder: Path, sequence: list[str], lead_in_s: float) -> list[float]:
    """One 16 kHz WAV per spoken question in play order (the first led by `lead_in_s` of silence), each
    text synthesised once with the default piper voice; returns the seconds of speech of each file."""
    import numpy as np
    import soundfile as sf

    from audio.pcm import ASR_RATE
    from watus.bench.speech_workload import make_wavs

    unique = list(dict.fromkeys(sequence))
    voiced = make_wavs(folder / "voice", tuple(unique), "q")
    audio = {text: sf.read(path, dtype="float32")[0] for path, text, _ in voiced}
    mic = folder / "mic"
    shutil.rmtree(mic, ignore_errors=True)
    mic.mkdir(parents=True)
    for i, text in enumerate(sequence):
        pcm = audio[text]
        if i == 0:
            pcm = np.concatenate([np.zeros(int(lead_in_s * ASR_RATE), np.float32), pcm])
        sf.write(mic / f"{i:04d}.wav", pcm, ASR_RATE, subtype="PCM_16")
    return [len(audio[text]) / ASR_RATE for text in sequence]


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
