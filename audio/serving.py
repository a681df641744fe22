"""Request handling behind the routes: validate fully, then transcribe or stream synthesis.

Every check a client can fail happens before the first byte of a response (a streamed WAV cannot turn
into a 400 halfway). Engine and decoder exceptions are translated into `audio.errors` types here, the
one place that knows both sides.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from audio.asr.base import AsrError, TranscribeOptions
from audio.errors import (
    BadRequestError,
    InternalEngineError,
    InvalidAudioError,
    PayloadTooLargeError,
    UnknownVoiceError,
)
from audio.events import EventBus
from audio.metrics import AudioMetrics
from audio.pcm import ASR_RATE, AudioDecodeError, StreamResampler, decode_upload, to_float32, to_int16, wav_header
from audio.protocol import (
    OPENAI_PCM_RATE,
    Segment,
    SpeechRequest,
    TranscriptionJson,
    TranscriptionUsage,
    TranscriptionVerbose,
    Word,
)
from audio.runtime import AudioRuntime, Models, asr_options
from audio.settings import AudioSettings
from audio.tts import VoiceRef
from audio.tts.base import VoiceNotFoundError
from watus.core.sentences import speakable_pieces

log = logging.getLogger(__name__)

_DECODE_CODES = {"empty": "empty_file", "truncated": "truncated_file", "not_audio": "invalid_audio",
                 "sample_rate": "unsupported_sample_rate", "too_long": "audio_too_long"}
TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")
SPEECH_FORMATS = ("wav", "pcm")


@dataclass
class AudioState:
    """What the routes reach through `Depends`: set once the models are loaded."""

    settings: AudioSettings
    models: Models
    runtime: AudioRuntime
    bus: EventBus
    metrics: AudioMetrics
    asr_model_id: str
    multilingual: bool
    languages: frozenset[str]


def _options(state: AudioState, language: str | None, prompt: str | None, temperature: float,
             hotwords: str | None, words: bool) -> TranscribeOptions:
    base = asr_options(state.settings)
    if language is not None:
        language = language.strip().lower() or None
    if language is not None and language not in state.languages:
        raise BadRequestError(f"Unknown language {language!r}: use an ISO 639-1 code such as en or pl.",
                              param="language", code="unsupported_language")
    if language not in (None, "en") and not state.multilingual:
        raise BadRequestError(f"The ASR model {state.asr_model_id} is English-only; it cannot transcribe "
                              f"{language!r} (WATUS_AUDIO_ASR_MODEL=base is multilingual).", param="language",
                              code="unsupported_language")
    if not 0.0 <= temperature <= 1.0:
        raise BadRequestError("temperature must be within [0, 1].", param="temperature")
    return TranscribeOptions(language=language or base.language, prompt=prompt or None,
                             hotwords=base.hotwords if hotwords is None else (hotwords or None),
                             beam_size=base.beam_size, temperature=temperature, word_timestamps=words)


async def transcribe_upload(state: AudioState, file: UploadFile, response_format: str, language: str | None,
                            prompt: str | None, temperature: float, hotwords: str | None,
                            granularities: list[str], headers: dict[str, str]) -> Response:
    if response_format not in TRANSCRIPTION_FORMATS:
        raise BadRequestError(f"response_format {response_format!r} is not supported: use "
                              f"{', '.join(TRANSCRIPTION_FORMATS)}.", param="response_format")
    unknown = set(granularities) - {"segment", "word"}
    if unknown:
        raise BadRequestError(f"timestamp_granularities: unknown {sorted(unknown)}; use segment, word.",
                              param="timestamp_granularities")
    words = "word" in granularities
    if words and response_format != "verbose_json":
        raise BadRequestError("Word timestamps need response_format=verbose_json.", param="timestamp_granularities")
    options = _options(state, language, prompt, temperature, hotwords, words)
    data = await file.read()
    if len(data) > state.settings.max_upload_bytes:
        raise _too_large(state.settings.max_upload_bytes)
    try:
        decoded = await asyncio.to_thread(decode_upload, data, ASR_RATE, state.settings.max_upload_seconds)
    except AudioDecodeError as e:
        state.metrics.rejected.labels(_DECODE_CODES.get(e.reason, "invalid_audio")).inc()
        raise InvalidAudioError(str(e), param="file", code=_DECODE_CODES.get(e.reason, "invalid_audio")) from None
    try:
        t = await state.models.asr.transcribe(decoded.samples, options, source="http")
    except AsrError as e:
        raise InternalEngineError(f"Transcription failed: {e}") from None
    usage = TranscriptionUsage(seconds=float(math.ceil(decoded.duration_s)))
    if response_format == "text":
        return PlainTextResponse(t.text + "\n", headers=headers)
    if response_format == "json":
        return JSONResponse(TranscriptionJson(text=t.text, usage=usage).model_dump(), headers=headers)
    segments = [Segment(id=s.id, start=round(s.start, 3), end=round(s.end, 3), text=s.text, tokens=s.tokens,
                        temperature=s.temperature, avg_logprob=s.avg_logprob, compression_ratio=s.compression_ratio,
                        no_speech_prob=s.no_speech_prob) for s in t.segments]
    word_list = [Word(word=w.word, start=round(w.start, 3), end=round(w.end, 3), probability=round(w.probability, 4))
                 for s in t.segments for w in s.words] if words else None
    body = TranscriptionVerbose(language=t.language, duration=round(decoded.duration_s, 3), text=t.text,
                                segments=segments, words=word_list, usage=usage)
    return JSONResponse(body.model_dump(exclude_none=True), headers=headers)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"File larger than the limit of {limit:,} bytes (WATUS_AUDIO_MAX_UPLOAD_BYTES).",
                                param="file")


def check_text(text: str, max_chars: int, param: str) -> str:
    stripped = text.strip()
    if not stripped:
        raise BadRequestError(f"{param} must not be empty.", param=param, code="empty_input")
    if len(text) > max_chars:
        raise BadRequestError(f"{param} is {len(text):,} characters long; the limit is {max_chars:,} "
                              "(WATUS_AUDIO_TTS_MAX_CHARS).", param=param, code="string_above_max_length")
    return stripped


def resolve_voice(state: AudioState, voice: str | None) -> VoiceRef:
    try:
        return state.models.voices.resolve(voice)
    except VoiceNotFoundError as e:
        state.metrics.rejected.labels("voice_not_found").inc()
        raise UnknownVoiceError(str(e), param="voice") from None


async def speech(state: AudioState, req: SpeechRequest, headers: dict[str, str]) -> Response:
    text = check_text(req.input, state.settings.tts_max_chars, "input")
    if req.response_format not in SPEECH_FORMATS:
        raise BadRequestError(f"response_format {req.response_format!r} is not supported: use wav or pcm.",
                              param="response_format")
    if req.stream_format != "audio":
        raise BadRequestError("stream_format must be 'audio' (raw audio bytes as they are synthesised).",
                              param="stream_format")
    voice = resolve_voice(state, req.voice)
    pieces = speakable_pieces(text, state.settings.tts_first_clause)
    rate = voice.engine.sample_rate if req.response_format == "wav" else OPENAI_PCM_RATE
    received = time.perf_counter()

    async def body() -> AsyncIterator[bytes]:
        resampler = StreamResampler(voice.engine.sample_rate, rate)
        first = True
        try:
            async for chunk in state.models.tts.stream(pieces, voice, req.speed):
                pcm = chunk.pcm
                if rate != chunk.sample_rate:
                    pcm = to_int16(resampler(to_float32(pcm), last=chunk.last))
                if not len(pcm):
                    continue
                data = pcm.astype("<i2").tobytes()
                if first:
                    state.metrics.tts_first_audio.labels("http").observe(time.perf_counter() - received)
                    if req.response_format == "wav":
                        data = wav_header(rate) + data
                    first = False
                yield data
            if first and req.response_format == "wav":
                yield wav_header(rate, n_bytes=0)  # nothing speakable (punctuation only): an empty WAV
        except Exception as e:  # after the first byte an error can only end the stream
            log.exception("speech synthesis failed mid-stream: %s", e)
            return

    media = "audio/wav" if req.response_format == "wav" else "audio/pcm"
    return StreamingResponse(body(), media_type=media,
                             headers={**headers, "X-Sample-Rate": str(rate), "Cache-Control": "no-store"})
