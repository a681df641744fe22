"""Whisper on a window fitted to the utterance, not the 30 s it was trained on.

Whisper's encoder always reads 30 s of log-mel (3,000 frames) and its cost does not depend on how much
of that is speech: tiny.en int8 on two CPU cores spends 300-400 ms on "What do you see?" (1 s), nearly
all of it encoding 29 s of padding. CTranslate2 encodes any number of frames (the positional embedding is
sliced), so a live utterance is encoded as itself plus `PAD_S` of padding, rounded up to whole seconds.

The decoder was trained on full windows and, given a short one, does not stop by itself: after the words
it starts them again. Decoding is therefore bounded by the utterance's length (`max_tokens_for`) and cut
where it returns to its own start (`cut_loop`). Measured on 12 piper questions and 3 espeak-ng phrases
(tiny.en, greedy, the prompt "Watus."): median 89 ms instead of 330 ms, WER 0.025 instead of 0.013
("how far away the bus is" came out as "... the buses"). So this is for live, short, greedy turns,
where the robot's reply waits for it (`WATUS_AUDIO_ASR_WINDOW`); uploads and barge-ins keep the full window.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from audio.pcm import ASR_RATE, F32

PAD_S = 1.0  # padding after the speech: less cut the last word, more buys nothing (same WER at 3 s)
FRAMES_PER_S = 100  # Whisper's 10 ms hop
FULL_FRAMES = 3000
LOOP_TOKENS = 3  # a loop is the first this many tokens coming again
# faster-whisper's own rule for a segment that is not speech (its no_speech_threshold / log_prob_threshold):
# on a short window the decoder says something for noise too ("I'm going to go.", avg log-prob -2.2).
NO_SPEECH_PROB = 0.6
LOG_PROB_FLOOR = -1.0


def window_frames(samples: int) -> int:
    """Frames to encode for `samples` of audio: the audio, `PAD_S` more, rounded up to a second, ≤ 30 s."""
    frames = samples / ASR_RATE * FRAMES_PER_S + PAD_S * FRAMES_PER_S
    return min(FULL_FRAMES, math.ceil(frames / FRAMES_PER_S) * FRAMES_PER_S)


def fitted_window_s(samples: int) -> float:
    return window_frames(samples) / FRAMES_PER_S


def max_tokens_for(samples: int) -> int:
    """A bound on the text tokens of `samples` of speech: 10 a second, plus 8. At 6 a second the decoder ended
    long sentences early, well before the bound itself: piper's 5-6 s requests lost their last words ("... and
    what they are [wearing today]", "... here [in the living room]") in 3 of 4, at 8 in none; the time did not
    change (the decoder stops by itself there). So the bound is kept wide: it is only for a decoder that loops."""
    return int(8 + 10 * samples / ASR_RATE)


def cut_loop(ids: list[int], n: int = LOOP_TOKENS) -> list[int]:
    """`ids` up to where they start over (the short window's failure mode: "What is it? What is it? What")."""
    if len(ids) < 2 * n:
        return ids
    head = ids[:n]
    for k in range(1, len(ids) - n + 1):
        if ids[k:k + n] == head:
            return ids[:k]
    return ids


def fitted_features(feature_extractor: Any, audio: F32) -> F32:
    """[1, 80, window_frames] log-mel of `audio`; the padding frames are zero (the normalised floor).

    Zero frames after normalisation were measured better than the features of digital silence (which the
    full pipeline has): with the latter the decoder looped more and cut more last words.
    """
    feats = np.asarray(feature_extractor(audio, padding=0), dtype=np.float32)
    n_mels, frames = feats.shape
    target = window_frames(len(audio))
    out = np.zeros((1, n_mels, target), np.float32)
    keep = min(frames, target)
    out[0, :, :keep] = feats[:, :keep]
    return out


def transcribe_fitted(model: Any, tokenizer: Any, audio: F32, prompt: str | None, beam_size: int,
                      ) -> tuple[list[int], float, float]:
    """(text token ids, average log-probability, no-speech probability) of `audio` on a fitted window.

    `model` is a faster-whisper `WhisperModel`; `tokenizer` its `Tokenizer` for the language (known, never
    detected here: detection would need the full window anyway).
    """
    import ctranslate2

    features = fitted_features(model.feature_extractor, audio)
    encoded = model.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)
    context: list[int] = []
    if prompt:
        context = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())]
    start = [*context, *tokenizer.sot_sequence, tokenizer.no_timestamps]
    result = model.model.generate(encoded, [start], beam_size=beam_size, max_length=len(start) + max_tokens_for(
        len(audio)), return_scores=True, return_no_speech_prob=True, suppress_blank=True)[0]
    ids = cut_loop([t for t in result.sequences_ids[0] if t < tokenizer.eot])
    score = float(result.scores[0]) if result.scores else 0.0
    no_speech = float(getattr(result, "no_speech_prob", 0.0))
    if no_speech > NO_SPEECH_PROB and score < LOG_PROB_FLOOR:
        ids = []
    return ids, score, no_speech
