"""Speech recognition: engine selection (heavy imports inside the branch) and the runner."""

from __future__ import annotations

from audio.asr.base import AsrEngine
from audio.settings import AsrEngineKind, AudioSettings


def select_asr(settings: AudioSettings) -> AsrEngine:
    """The engine the settings ask for (not loaded yet: `engine.load()` in a worker thread).

    Raises AsrModelNotFoundError when the model cannot be found (checked before anything loads).
    """
    if settings.asr_engine is AsrEngineKind.faster_whisper:
        from audio.asr.faster_whisper import FasterWhisperEngine

        return FasterWhisperEngine(settings.asr_model, settings.model_cache_dir, device=settings.asr_device,
                                   compute_type=settings.asr_compute_type, threads=settings.asr_threads)
    raise ValueError(f"unknown ASR engine {settings.asr_engine}")  # pragma: no cover - enum is exhaustive
