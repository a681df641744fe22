"""Pure logic of the audio service: segmentation, sentence splitting, upload decoding, settings, model join."""

from __future__ import annotations

import asyncio
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from audio.asr.models import WHISPER_BASE_MODEL_BYTES, prepare_whisper_base, resolve_asr_model
from audio.events import EventBus
from audio.pcm import AudioDecodeError, decode_upload, wav_bytes, wav_header
from audio.segmenter import Dropped, Gate, Pause, Resume, Segmenter, SegmenterConfig, SpeechEnd, SpeechStart
from audio.settings import AudioSettings
from watus.core.sentences import speakable_pieces, split_first_clause, split_sentences
from watus.core.wire.audio import MicEvent

FRAME = 512
RATE = 16_000


def _cfg(**kw: object) -> SegmenterConfig:
    base: dict[str, object] = dict(sample_rate=RATE, frame_samples=FRAME, min_speech_ms=96, end_silence_ms=320,
                                   pre_speech_ms=96, min_utterance_ms=200, max_utterance_ms=3000, pause_ms=128,
                                   tail_ms=128)
    base.update(kw)
    return SegmenterConfig(**base)  # type: ignore[arg-type]


def _run(seg: Segmenter, probs: list[float], gate: Gate = Gate.open, level: float = 0.0) -> list[object]:
    events: list[object] = []
    for p in probs:
        events += seg.push(np.full(FRAME, p, np.float32), p, level, gate)
    return events


def test_segmenter_one_utterance_with_pause_and_resume() -> None:
    seg = Segmenter(_cfg())
    probs = [0.0] * 10 + [0.9] * 20 + [0.1] * 5 + [0.9] * 10 + [0.0] * 12
    events = _run(seg, probs)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SpeechStart", "Pause", "Resume", "Pause", "SpeechEnd"], kinds
    start = events[0]
    assert isinstance(start, SpeechStart) and start.start == 10 * FRAME and not start.gated
    end = events[-1]
    assert isinstance(end, SpeechEnd) and end.reason == "silence"
    assert end.end == 45 * FRAME  # just after the last speech frame
    # pre-roll (3 frames) + speech and inner pause (35) + tail (4 frames)
    assert len(end.audio) == (3 + 35 + 4) * FRAME
    pause = events[3]
    assert isinstance(pause, Pause) and np.array_equal(pause.audio, end.audio)


def test_segmenter_waits_longer_only_over_the_pause_it_was_asked_at() -> None:
    """end_silence 320 ms = 10 frames. A wait of 640 ms asked at the first pause holds it over 12 silent
    frames; once speech resumes the usual 10 frames end the utterance again."""
    seg = Segmenter(_cfg())
    events = _run(seg, [0.0] * 5 + [0.9] * 20 + [0.0] * 4)  # the pause (128 ms = 4 frames) is reached
    assert [type(e).__name__ for e in events] == ["SpeechStart", "Pause"]
    seg.wait_longer(640)
    assert _run(seg, [0.0] * 8) == []  # 12 silent frames: not over yet
    events = _run(seg, [0.9] * 10 + [0.0] * 10)
    assert [type(e).__name__ for e in events] == ["Resume", "Pause", "SpeechEnd"]


def test_segmenter_drops_short_and_cuts_long() -> None:
    seg = Segmenter(_cfg())
    events = _run(seg, [0.9] * 4 + [0.0] * 12)
    assert isinstance(events[-1], Dropped)
    seg = Segmenter(_cfg(max_utterance_ms=1000))
    events = _run(seg, [0.9] * 40)
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(ends) == 1 and ends[0].reason == "max_length"


def test_segmenter_gates() -> None:
    probs = [0.0] * 5 + [0.9] * 20 + [0.0] * 12
    assert _run(Segmenter(_cfg()), probs, Gate.closed) == []
    # Raised: a quiet talker (the robot's own echo) does not start an utterance, a loud one does.
    assert _run(Segmenter(_cfg()), probs, Gate.raised, level=-45.0) == []
    events = _run(Segmenter(_cfg()), probs, Gate.raised, level=-20.0)
    assert isinstance(events[0], SpeechStart) and events[0].gated
    assert not any(isinstance(e, Resume) for e in events)


def test_segmenter_flush_ends_utterance() -> None:
    seg = Segmenter(_cfg())
    _run(seg, [0.9] * 20)
    (end,) = seg.flush()
    assert isinstance(end, SpeechEnd) and end.reason == "end_of_input"


def test_sentences() -> None:
    text = "Hello Dr. Smith. I see 3.5 people! Really?  Yes.\n\nA new paragraph e.g. this one"
    assert split_sentences(text) == ["Hello Dr. Smith.", "I see 3.5 people!", "Really?", "Yes.",
                                     "A new paragraph e.g. this one"]
    assert split_sentences("   ") == []
    long = "The weather is nice today, and I would like to go for a walk in the park with you."
    assert split_first_clause(long) == ["The weather is nice today,",
                                        "and I would like to go for a walk in the park with you."]
    assert split_first_clause("Hi, there.") == ["Hi, there."]
    assert speakable_pieces(long + " Bye.", first_clause=False) == [long, "Bye."]


def _wav(samples: np.ndarray, rate: int) -> bytes:
    return wav_bytes((samples * 32767).astype(np.int16), rate)


def test_decode_good_formats() -> None:
    t = np.arange(22050) / 22050
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for fmt in ("WAV", "FLAC", "OGG", "MP3"):
        buf = io.BytesIO()
        sf.write(buf, tone, 22050, format=fmt)
        decoded = decode_upload(buf.getvalue())
        assert decoded.sample_rate == 16000 and decoded.source_rate == 22050
        assert abs(decoded.duration_s - 1.0) < 0.1, fmt


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"this is not audio at all, just some text that someone uploaded" * 10, "not_audio"),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "not_audio"),
    (_wav(np.zeros(16000, np.float32), 16000)[:2000], "truncated"),
    (_wav(np.zeros(16000, np.float32), 16000)[:30], "truncated"),
    (_wav(np.zeros(400, np.float32), 4000), "sample_rate"),
    (wav_header(16000, n_bytes=0), "empty"),
])
def test_decode_bad_input(data: bytes, reason: str) -> None:
    with pytest.raises(AudioDecodeError) as e:
        decode_upload(data)
    assert e.value.reason == reason, str(e.value)


def test_decode_too_long() -> None:
    with pytest.raises(AudioDecodeError) as e:
        decode_upload(_wav(np.zeros(16000 * 3, np.float32), 16000), max_seconds=2.0)
    assert e.value.reason == "too_long"


def test_wav_header_sizes() -> None:
    h = wav_header(22050, n_bytes=100)
    assert h[:4] == b"RIFF" and struct.unpack("<I", h[40:44])[0] == 100 and len(h) == 44


def test_settings_bounds_and_consistency() -> None:
    s = AudioSettings()
    assert s.port == 8082 and s.host == "127.0.0.1" and s.asr_model == "tiny.en"
    with pytest.raises(ValidationError):
        AudioSettings(vad_threshold=1.5)
    with pytest.raises(ValidationError):
        AudioSettings(mic_backend="file")
    with pytest.raises(ValidationError):
        AudioSettings(asr_speculative_silence_ms=600, vad_end_silence_ms=500)
    assert AudioSettings(asr_language="", asr_hotwords=" ").asr_language is None


def test_prepare_whisper_base_joins_once(tmp_path: Path) -> None:
    folder = prepare_whisper_base(tmp_path)
    model = folder / "model.bin"
    assert model.stat().st_size == WHISPER_BASE_MODEL_BYTES
    assert {p.name for p in folder.iterdir()} == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    mtime = model.stat().st_mtime_ns
    assert prepare_whisper_base(tmp_path) == folder and model.stat().st_mtime_ns == mtime  # reused
    # A damaged join (wrong size) is redone.
    with model.open("r+b") as f:
        f.truncate(1000)
    assert prepare_whisper_base(tmp_path).joinpath("model.bin").stat().st_size == WHISPER_BASE_MODEL_BYTES
    assert resolve_asr_model("base", tmp_path) == (folder, "whisper-base")


def test_resolve_missing_model(tmp_path: Path) -> None:
    from audio.asr.base import AsrModelNotFoundError

    with pytest.raises(AsrModelNotFoundError, match="WATUS_AUDIO_ASR_MODEL"):
        resolve_asr_model(str(tmp_path / "nope"), tmp_path)


async def test_event_bus_drops_oldest_for_slow_client() -> None:
    dropped: list[int] = []
    bus = EventBus(asyncio.get_running_loop(), queue_size=8, on_drop=dropped.append)
    with bus.subscribe() as sub:
        for i in range(10):
            bus.publish(MicEvent(t_ns=i, state="running"))
        first = await sub.next(1.0)
        assert first is not None and first.t_ns == 2
        assert sum(dropped) == 2
    assert bus.subscribers == 0


def test_piper_without_its_variation_says_a_text_the_same_way_every_time() -> None:
    from audio.tts.piper import PiperEngine

    def takes(variation: bool) -> list[np.ndarray]:
        engine = PiperEngine(threads=1, variation=variation)
        engine.load()
        voice = engine.voices()[0]
        return [np.concatenate(list(engine.synthesize("How far is it to the station?", voice, 1.0)))
                for _ in range(3)]

    fixed = takes(False)
    assert all(np.array_equal(t, fixed[0]) for t in fixed)  # sample for sample
    varied = takes(True)  # the voice's own noise: durations and waveform differ from take to take
    assert not all(len(t) == len(varied[0]) and np.array_equal(t, varied[0]) for t in varied)
    assert AudioSettings.model_fields["tts_variation"].default is True  # only the tests turn it off
