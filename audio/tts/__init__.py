"""Speech synthesis: engine selection (heavy imports inside the branch) and voice names.

Voices are named per engine: piper voices by their file name (`en_US-joe-medium`, short `joe`), espeak-ng
voices as `espeak:<language>` (`espeak:pl`). OpenAI's stock voice names (`alloy`, ...) mean the default
voice, so an unmodified OpenAI client speaks; any other name is an unknown voice (a 400 listing them).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from audio.settings import AudioSettings, TtsEngineKind
from audio.tts.base import TtsEngine, VoiceNotFoundError

log = logging.getLogger(__name__)

OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                           "verse", "marin", "cedar"})
ESPEAK_PREFIX = "espeak:"


@dataclass(frozen=True)
class VoiceRef:
    engine: TtsEngine
    voice: str  # the engine's own name for it
    name: str  # the name clients use


def select_tts(settings: AudioSettings) -> list[TtsEngine]:
    """The engines to load, the default voice's engine first. Raises VoiceNotFoundError for a missing voice."""
    from audio.tts.espeak import EspeakEngine

    if settings.tts_engine is TtsEngineKind.espeak:
        return [EspeakEngine(settings.tts_espeak_voice)]
    from audio.tts.piper import PiperEngine

    engines: list[TtsEngine] = [PiperEngine(settings.tts_voice_path, threads=settings.tts_threads,
                                            use_cuda=settings.tts_use_cuda, variation=settings.tts_variation)]
    if settings.tts_espeak:
        if shutil.which("espeak-ng"):
            engines.append(EspeakEngine(settings.tts_espeak_voice))
        else:
            log.info("espeak-ng not installed: only piper voices are offered")
    return engines


class Voices:
    """Maps the voice a request names to an engine and the engine's voice (after the engines loaded)."""

    def __init__(self, engines: list[TtsEngine]) -> None:
        self._by_name: dict[str, VoiceRef] = {}
        for engine in engines:
            for v in engine.voices():
                name = f"{ESPEAK_PREFIX}{v}" if engine.name == "espeak" else v
                self._by_name.setdefault(name, VoiceRef(engine, v, name))
        primary = engines[0]
        if primary.name == "espeak":
            default_voice = getattr(primary, "default_voice", primary.voices()[0])
            self.default = self._by_name[f"{ESPEAK_PREFIX}{default_voice}"]
        else:
            self.default = self._by_name[primary.voices()[0]]

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def resolve(self, requested: str | None) -> VoiceRef:
        if requested is None or not requested.strip() or requested in OPENAI_VOICES:
            return self.default
        ref = self._by_name.get(requested.strip())
        if ref is None:
            shown = [n for n in self.names() if not n.startswith(ESPEAK_PREFIX)]
            espeak = any(n.startswith(ESPEAK_PREFIX) for n in self._by_name)
            raise VoiceNotFoundError(
                f"Unknown voice {requested!r}. Voices: {', '.join(shown)}"
                + (", espeak:<language> (e.g. espeak:pl; GET /v1/voices lists them)" if espeak else "")
                + f", or an OpenAI voice name for the default ({self.default.name}).")
        return ref
