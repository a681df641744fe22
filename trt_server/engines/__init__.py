"""Engine selection: one pure function from settings to an engine, heavy imports inside each branch."""

from __future__ import annotations

from trt_server.engines.base import Engine
from trt_server.settings import EngineKind, LLMSettings


def select_engine(settings: LLMSettings) -> Engine:
    """The engine the settings ask for (not loaded yet: call `await engine.load()`)."""
    if settings.engine is EngineKind.trtllm:
        from trt_server.engines.trtllm import TrtLlmEngine

        return TrtLlmEngine(settings)
    from trt_server.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(settings)
