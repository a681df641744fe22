"""Watus audio service: microphone → VAD → faster-whisper, text → piper → speaker, over HTTP and SSE.

Layers, imported in one direction: `protocol` (wire schemas) ← engines (`asr/`, `tts/`, `vad`, `devices/`)
and pipelines (`listen`, `speak`) ← `app` (thin routes) and `__main__` (`python -m audio`). Heavy
libraries are imported inside the engine that needs them, so importing this package is cheap.
"""
