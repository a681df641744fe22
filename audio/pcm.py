"""PCM helpers: decode uploads safely, resample, convert sample formats, write WAV headers.

Uploads are decoded with libsndfile (through `soundfile`, whose wheels bundle a libsndfile that reads
WAV, FLAC, OGG/Vorbis/Opus and MP3), which fails loudly on non-audio instead of guessing. Everything a
client can get wrong — empty, truncated, not audio, an unusable sample rate, too long — is a specific
`AudioDecodeError` with a message meant for that client. Resampling uses soxr (high quality, and a
streaming mode for device blocks).
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I16 = npt.NDArray[np.int16]

#: Rate every model of this service takes (Whisper, Silero, webrtcvad).
ASR_RATE = 16_000
MIN_UPLOAD_RATE = 8_000
MAX_UPLOAD_RATE = 384_000


class AudioDecodeError(ValueError):
    """An upload that cannot be used; `reason` is a short machine-readable code."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DecodedAudio:
    samples: F32  # mono, float32 in [-1, 1], at `sample_rate`
    sample_rate: int
    source_rate: int
    format: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def _check_riff(data: bytes) -> None:
    """Reject WAV files whose header promises more audio than the file holds (cut uploads)."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        return
    pos, has_fmt = 12, False
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk_id == b"fmt ":
            has_fmt = True
        if chunk_id == b"data":
            if not has_fmt:
                raise AudioDecodeError("WAV file has no format chunk before its data.", "truncated")
            available = len(data) - pos - 8
            # 0 and 0xFFFFFFFF mark streamed WAVs of unknown length (RF64 keeps the size elsewhere).
            if size not in (0, 0xFFFFFFFF) and data[:4] == b"RIFF" and available < size:
                raise AudioDecodeError(
                    f"WAV file is truncated: its header promises {size:,} bytes of audio, the upload has "
                    f"{available:,}.", "truncated")
            return
        pos += 8 + size + (size & 1)
    raise AudioDecodeError("WAV file is truncated: no audio data chunk.", "truncated")


def decode_upload(data: bytes, target_rate: int = ASR_RATE, max_seconds: float = 600.0) -> DecodedAudio:
    """Decode an uploaded file (WAV/FLAC/OGG/MP3) to mono float32 at `target_rate`.

    Raises AudioDecodeError for empty, truncated, non-audio, wrong-rate or too long input.
    """
    import soundfile as sf

    if not data:
        raise AudioDecodeError("The uploaded file is empty.", "empty")
    _check_riff(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, frames, fmt = int(f.samplerate), int(f.frames), str(f.format)
            if not MIN_UPLOAD_RATE <= rate <= MAX_UPLOAD_RATE:
                raise AudioDecodeError(
                    f"Sample rate {rate} Hz is not supported: use {MIN_UPLOAD_RATE:,}–{MAX_UPLOAD_RATE:,} Hz.",
                    "sample_rate")
            # MP3 and OGG headers do not always know their length: bound it while reading.
            if 0 < frames < 2**62 and frames / rate > max_seconds:
                raise AudioDecodeError(f"Audio is {frames / rate:.0f} s long; the limit is {max_seconds:.0f} s "
                                       "(WATUS_AUDIO_MAX_UPLOAD_SECONDS).", "too_long")
            limit = int(max_seconds * rate) + 1
            audio = f.read(frames=limit, dtype="float32", always_2d=True)
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        raise AudioDecodeError(f"The upload is not a readable audio file (WAV, FLAC, MP3 or OGG): {e}",
                               "not_audio") from None
    if len(audio) >= limit:
        raise AudioDecodeError(f"Audio is longer than the limit of {max_seconds:.0f} s "
                               "(WATUS_AUDIO_MAX_UPLOAD_SECONDS).", "too_long")
    if len(audio) == 0:
        raise AudioDecodeError("The audio file holds no samples.", "empty")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if not np.isfinite(mono).all():
        raise AudioDecodeError("The audio holds non-finite samples.", "not_audio")
    return DecodedAudio(resample(mono, rate, target_rate), target_rate, rate, fmt)


def resample(x: F32, rate_in: int, rate_out: int) -> F32:
    """Whole-signal resampling (uploads, TTS output to another rate)."""
    if rate_in == rate_out or len(x) == 0:
        return np.ascontiguousarray(x, dtype=np.float32)
    import soxr

    return np.asarray(soxr.resample(x, rate_in, rate_out, quality="HQ"), dtype=np.float32)


class StreamResampler:
    """Block-by-block resampling with state carried across blocks (device streams)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self._stream = None
        if rate_in != rate_out:
            import soxr

            self._stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")

    def __call__(self, block: F32, last: bool = False) -> F32:
        if self._stream is None:
            return block
        return np.asarray(self._stream.resample_chunk(block, last=last), dtype=np.float32)


def to_int16(x: F32) -> I16:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def to_float32(x: I16) -> F32:
    return (x.astype(np.float32) / 32768.0).astype(np.float32)


def dbfs(x: F32) -> float:
    """RMS level in dB relative to full scale (-inf → -120)."""
    if len(x) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 1e-6 else -120.0


def wav_header(sample_rate: int, channels: int = 1, n_bytes: int | None = None) -> bytes:
    """A 16-bit PCM WAV header; with `n_bytes` None the sizes say "unknown" (streamed WAV)."""
    data_size = 0xFFFFFFFF if n_bytes is None else n_bytes
    riff_size = 0xFFFFFFFF if n_bytes is None else 36 + n_bytes
    block_align = channels * 2
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16)
            + b"data" + struct.pack("<I", data_size))


def wav_bytes(samples: I16, sample_rate: int) -> bytes:
    """A complete mono 16-bit WAV file."""
    raw = np.ascontiguousarray(samples, dtype="<i2").tobytes()
    return wav_header(sample_rate, 1, len(raw)) + raw
