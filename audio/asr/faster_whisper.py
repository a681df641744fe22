"""faster-whisper (CTranslate2) engine: tiny.en on the CPU here, any Whisper size on the robot's GPU.

Imported only when selected. Decoding is tuned for short live utterances: greedy by default, no
temperature fallback (a retry would double the latency of the turn it is meant to save), no
conditioning on previous text, and no timestamps unless words are asked for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from audio.asr.base import (
    AsrError,
    AsrInfo,
    AsrNotInstalledError,
    AsrSegment,
    TranscribeOptions,
    WordTiming,
)
from audio.asr.fitted import fitted_window_s, transcribe_fitted
from audio.asr.models import resolve_asr_model
from audio.pcm import ASR_RATE, F32

log = logging.getLogger(__name__)


def language_codes() -> frozenset[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


def prompt_of(options: TranscribeOptions) -> tuple[str | None, str | None]:
    """(initial prompt, hotwords) for faster-whisper.

    Hotwords alone are given as a finished sentence of context ("Watus.") rather than faster-whisper's
    `hotwords`, which prefixes them unpunctuated: the model then reads them as the start of the utterance.
    Measured with tiny.en on espeak-ng phrases: `hotwords="Watus"` turned "Hold on, that is not what I
    asked." into "Hold on, let it not work out" and "Watus, stop talking." into "Where does stop
    talking?"; the prompt "Watus." got all nine phrases right, the name included (piper's voice: no change).
    With a caller's prompt the hotwords stay faster-whisper's own.
    """
    prompt = options.prompt or None
    words = (options.hotwords or "").strip()
    if prompt is None and words:
        return words.rstrip(".,;:!? ") + ".", None
    return prompt, words or None


def names_a_hotword(text: str, hotwords: str | None) -> bool:
    """Does `text` contain any of `hotwords` (comma- or space-separated), as whole words, in any case?"""
    words = set(re.findall(r"[\w']+", text.lower()))
    return any(w in words for w in re.findall(r"[\w']+", (hotwords or "").lower()))


class FasterWhisperEngine:
    name = "faster_whisper"

    def __init__(self, model: str, cache_dir: Path, *, device: str, compute_type: str, threads: int) -> None:
        self.path, self.model_id = resolve_asr_model(model, cache_dir)
        self._device, self._compute_type, self._threads = device, compute_type, threads
        self.multilingual = False
        self._model: Any = None
        self._tokenizers: dict[str, Any] = {}

    def load(self) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise AsrNotInstalledError("faster-whisper is not installed: pip install 'watus[audio]'") from e
        # faster-whisper logs every call at INFO ("Processing audio with duration ..."): noise for a service.
        logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLogger().level))
        try:
            self._model = WhisperModel(str(self.path), device=self._device, compute_type=self._compute_type,
                                       cpu_threads=self._threads, num_workers=1)
        except (RuntimeError, ValueError, OSError) as e:
            raise AsrError(f"could not load the ASR model {self.path}: {e}") from e
        self.multilingual = bool(self._model.model.is_multilingual)
        log.info("ASR %s loaded from %s (%s/%s, multilingual=%s)", self.model_id, self.path, self._device,
                 self._compute_type, self.multilingual)

    def ready(self) -> bool:
        return self._model is not None

    def transcribe(self, audio: F32, options: TranscribeOptions) -> tuple[AsrInfo, Iterator[AsrSegment]]:
        if self._model is None:
            raise AsrError("ASR model not loaded")
        language = options.language if self.multilingual else "en"
        prompt, hotwords = prompt_of(options)
        if options.fit_window and language and not options.word_timestamps and not hotwords:
            info_fit, fitted = self._fitted(audio, language, prompt, options)
            if (not options.hotword_check or not options.hotwords or not fitted.text.strip()
                    or names_a_hotword(fitted.text, options.hotwords)):
                return info_fit, iter([fitted])
            log.debug("fitted transcript %r has no hotword: transcribing again on the full window", fitted.text)
        segments, info = self._model.transcribe(
            np.ascontiguousarray(audio, dtype=np.float32), language=language, task="transcribe",
            beam_size=options.beam_size, temperature=options.temperature, initial_prompt=prompt,
            hotwords=hotwords, condition_on_previous_text=False,
            without_timestamps=not options.word_timestamps, word_timestamps=options.word_timestamps,
            vad_filter=False,
        )
        meta = AsrInfo(language=str(info.language), language_probability=float(info.language_probability),
                       duration=float(info.duration))
        return meta, self._segments(segments, options.temperature)

    def _fitted(self, audio: F32, language: str, prompt: str | None,
                options: TranscribeOptions) -> tuple[AsrInfo, AsrSegment]:
        from faster_whisper.tokenizer import Tokenizer

        tokenizer = self._tokenizers.get(language)
        if tokenizer is None:
            tokenizer = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
            self._tokenizers[language] = tokenizer
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        ids, score, no_speech = transcribe_fitted(self._model, tokenizer, samples, prompt, options.beam_size)
        duration = len(samples) / ASR_RATE
        segment = AsrSegment(id=1, start=0.0, end=round(duration, 3), text=tokenizer.decode(ids), tokens=ids,
                             avg_logprob=score, no_speech_prob=no_speech, temperature=options.temperature)
        window = fitted_window_s(len(samples))
        return AsrInfo(language=language, language_probability=1.0, duration=duration, window_s=window), segment

    @staticmethod
    def _segments(segments: Iterator[Any], temperature: float) -> Iterator[AsrSegment]:
        for s in segments:
            words = [WordTiming(w.word, float(w.start), float(w.end), float(w.probability)) for w in s.words or []]
            yield AsrSegment(id=int(s.id), start=float(s.start), end=float(s.end), text=str(s.text),
                             tokens=[int(t) for t in s.tokens], avg_logprob=float(s.avg_logprob),
                             compression_ratio=float(s.compression_ratio), no_speech_prob=float(s.no_speech_prob),
                             temperature=float(s.temperature if s.temperature is not None else temperature),
                             words=words)
