"""What `watus bench speech` (and `watus bench e2e`) speaks: the sentence sets, WAVs of them in piper's voice,
and the word error rate a transcript is scored with.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

#: Sentences spoken for the ASR part, short (~1.5 s), medium (~3 s) and long (~6 s).
ASR_SENTENCES = (
    "Watus, turn on the light.",
    "Hello Watus, what can you see in the kitchen right now?",
    "Watus, please go to the living room, look around carefully, and tell me how many people are sitting "
    "on the sofa next to the window.",
    "Can you tell me how many chairs are in this room?",
    "Good morning Watus.",
    "The red ball is under the table, next to the big green plant by the door, and the cat is asleep on it.",
)
#: About 3 s each: the utterances of the end-of-speech part (the goal is stated for a 3-second utterance).
EOS_SENTENCES = (
    "Hello Watus, what can you see in the kitchen right now?",
    "Watus, please tell me how many people are in the room.",
    "Can you describe the person who is standing by the door?",
    "Good morning Watus, is anybody sitting on the sofa today?",
    "Please look at the table and tell me what is on it.",
    "Watus, remind me what we talked about yesterday evening.",
)
#: One-sentence replies of the kind the agent speaks.
TTS_REPLIES = (
    "I can see two people and a chair.",
    "Hello! It is nice to see you again today.",
    "There is a red ball under the table, next to the plant.",
    "Sure, I will remind you about it tomorrow morning.",
    "Nobody is sitting on the sofa right now.",
)


def word_error_rate(ref: str, hyp: str) -> float:
    """Word-level Levenshtein distance / reference words, ignoring case and punctuation."""
    r = re.sub(r"[^a-z0-9' ]", " ", ref.lower()).split()
    h = re.sub(r"[^a-z0-9' ]", " ", hyp.lower()).split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[len(h)] / max(1, len(r))


def make_wavs(folder: Path, sentences: tuple[str, ...], prefix: str,
              lead_in_s: float = 0.0, *, variation: bool = False) -> list[tuple[Path, str, float]]:
    """Speak each sentence with the default piper voice into a 16 kHz WAV: (path, text, seconds of speech).

    `lead_in_s` of silence goes before the speech (live playback: time for a client to subscribe).
    Without `variation` piper speaks without its sampling noise, so a sentence is the same audio in every
    run and two runs of a benchmark can be compared turn by turn; with it, each run hears a new rendition.
    """
    import soundfile as sf

    from audio.pcm import ASR_RATE, resample, to_float32
    from audio.tts.piper import PiperEngine

    engine = PiperEngine(threads=1, variation=variation)
    engine.load()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, text in enumerate(sentences):
        pcm = np.concatenate(list(engine.synthesize(text, engine.voices()[0], 1.0)))
        audio = resample(to_float32(pcm), engine.sample_rate, ASR_RATE)
        path = folder / f"{prefix}{i:02d}.wav"
        lead = np.zeros(int(lead_in_s * ASR_RATE), np.float32)
        sf.write(path, np.concatenate([lead, audio]), ASR_RATE, subtype="PCM_16")
        out.append((path, text, len(audio) / ASR_RATE))
    return out
