"""`python -m audio`: run the audio service (what systemd's `ExecStart=` runs).

Flags override the `WATUS_AUDIO_*` settings. Models are located before anything starts: one that
cannot be found ends the process with a one-line error saying what to install or set, and status 2,
never a traceback; so does an address off loopback without an API key (`watus.core.security`). A
microphone that is missing is not fatal (it is retried and shown in /health).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from audio.settings import AudioSettings, MicBackend, SpeakerBackend, TtsEngineKind, VadEngineKind
from watus.core.logs import setup_logging
from watus.core.security import check_bind
from watus.core.serve import serve

log = logging.getLogger("audio")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m audio", description="Watus audio service: mic → VAD → ASR, "
                                "text → TTS → speaker.")
    p.add_argument("--host", help="listen address (WATUS_AUDIO_HOST)")
    p.add_argument("--port", type=int, help="port (WATUS_AUDIO_PORT)")
    p.add_argument("--asr-model", help="tiny.en, base, or a CTranslate2 folder (WATUS_AUDIO_ASR_MODEL)")
    p.add_argument("--language", help="spoken language, ISO code; '' to detect (WATUS_AUDIO_ASR_LANGUAGE)")
    p.add_argument("--tts-engine", choices=[e.value for e in TtsEngineKind], help="WATUS_AUDIO_TTS_ENGINE")
    p.add_argument("--voice", type=Path, help="piper .onnx voice (WATUS_AUDIO_TTS_VOICE_PATH)")
    p.add_argument("--vad", choices=[e.value for e in VadEngineKind], help="WATUS_AUDIO_VAD_ENGINE")
    p.add_argument("--mic", choices=[e.value for e in MicBackend], help="WATUS_AUDIO_MIC_BACKEND")
    p.add_argument("--mic-device", help="input device name or index (WATUS_AUDIO_MIC_DEVICE)")
    p.add_argument("--mic-file", type=Path, help="WAV file or folder as the microphone (WATUS_AUDIO_MIC_FILE)")
    p.add_argument("--speaker", choices=[e.value for e in SpeakerBackend], help="WATUS_AUDIO_SPEAKER_BACKEND")
    p.add_argument("--speaker-device", help="output device name or index (WATUS_AUDIO_SPEAKER_DEVICE)")
    p.add_argument("--speaker-wav", type=Path, help="WAV file the wav speaker writes (WATUS_AUDIO_SPEAKER_WAV_PATH)")
    p.add_argument("--log-level", help="logging level (WATUS_AUDIO_LOG_LEVEL)")
    return p.parse_args(argv)


def _check_models(settings: AudioSettings) -> str | None:
    """The reason the configured models cannot be used, or None (nothing is loaded here)."""
    from audio.asr import select_asr
    from audio.asr.base import AsrError
    from audio.tts import select_tts
    from audio.tts.base import TtsError

    try:
        select_asr(settings)
        select_tts(settings)
    except (AsrError, TtsError) as e:
        return str(e)
    except ImportError as e:
        return f"a speech library is missing ({e}): pip install 'watus[audio]'"
    return None


class _Server(uvicorn.Server):
    """Ends the SSE streams as soon as a stop is asked, so open event clients do not hold up the exit."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        bus = getattr(self._app.state, "bus", None)
        if bus is not None:
            bus.close()
        super().handle_exit(sig, frame)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    overrides = {k: v for k, v in {
        "host": args.host, "port": args.port, "asr_model": args.asr_model, "asr_language": args.language,
        "tts_engine": args.tts_engine, "tts_voice_path": args.voice, "vad_engine": args.vad,
        "mic_backend": args.mic, "mic_device": args.mic_device, "mic_file": args.mic_file,
        "speaker_backend": args.speaker, "speaker_device": args.speaker_device, "speaker_wav_path": args.speaker_wav,
        "log_level": args.log_level,
    }.items() if v is not None}
    if args.mic_file is not None and args.mic is None:
        overrides["mic_backend"] = MicBackend.file
    if args.speaker_wav is not None and args.speaker is None:
        overrides["speaker_backend"] = SpeakerBackend.wav
    try:
        settings = AudioSettings(**overrides)
    except ValidationError as e:
        print(f"audio: invalid settings:\n{e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_json)
    if not check_bind("audio", settings, settings.host, settings.port):
        return 2
    problem = _check_models(settings)
    if problem is not None:
        log.error("%s", problem)
        return 2

    from audio.app import create_app

    return serve(lambda on_failure: create_app(settings, on_load_failure=on_failure), settings.host, settings.port,
                 name="audio", graceful_s=5, make_server=_Server)

if __name__ == "__main__":
    sys.exit(main())
