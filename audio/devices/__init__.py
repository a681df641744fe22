"""Device selection from settings: one pure function per direction, sounddevice imported lazily."""

from __future__ import annotations

import logging
from collections.abc import Callable

from audio.devices.base import AudioSink, AudioSource
from audio.settings import AudioSettings, MicBackend, SpeakerBackend

log = logging.getLogger(__name__)

SourceFactory = Callable[[], AudioSource]


def select_source(settings: AudioSettings, on_overflow: Callable[[], None] | None = None) -> SourceFactory | None:
    """A factory of fresh microphone objects (the supervisor makes a new one per attempt), or None."""
    backend = settings.mic_backend
    if backend is MicBackend.auto:
        from audio.devices.sd import has_device

        backend = MicBackend.sounddevice if has_device("input") else MicBackend.none
        log.info("microphone: %s (mic_backend=auto)", backend.value)
    if backend is MicBackend.none:
        return None
    if backend is MicBackend.file:
        from audio.devices.wavfile import WavFileMic

        path = settings.mic_file
        assert path is not None  # checked by the settings
        return lambda: WavFileMic(path, settings.mic_realtime, settings.mic_loop, settings.mic_gap_s,
                                  settings.mic_block_ms)
    from audio.devices.sd import SoundDeviceMic

    return lambda: SoundDeviceMic(settings.mic_device, settings.mic_sample_rate, settings.mic_block_ms, on_overflow)


def select_sink(settings: AudioSettings, voice_rate: int) -> AudioSink:
    backend = settings.speaker_backend
    if backend is SpeakerBackend.auto:
        from audio.devices.sd import has_device

        backend = SpeakerBackend.sounddevice if has_device("output") else SpeakerBackend.null
        log.info("speaker: %s (speaker_backend=auto)", backend.value)
    if backend is SpeakerBackend.sounddevice:
        from audio.devices.sd import SoundDeviceSpeaker

        return SoundDeviceSpeaker(settings.speaker_device, settings.speaker_sample_rate, voice_rate)
    from audio.devices.wavfile import WavSink

    rate = settings.speaker_sample_rate or voice_rate
    return WavSink(settings.speaker_wav_path if backend is SpeakerBackend.wav else None, rate)
