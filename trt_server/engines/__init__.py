"""Engine selection: one pure function from settings to an engine, heavy imports inside each branch.

Each engine takes a small frozen config of the few settings it uses, built here, so no engine reads
the settings object.
"""

from __future__ import annotations

from trt_server.engines.base import Engine
from trt_server.settings import EngineKind, LLMSettings


def select_engine(settings: LLMSettings) -> Engine:
    """The engine the settings ask for (not loaded yet: call `await engine.load()`)."""
    if settings.engine is EngineKind.trtllm:
        from trt_server.engines.trtllm import TrtLlmConfig, TrtLlmEngine

        return TrtLlmEngine(TrtLlmConfig(
            engine_dir=settings.model_path,
            context_length=settings.context_length,
            kv_cache_free_gpu_memory_fraction=settings.kv_cache_free_gpu_memory_fraction,
            tokenizer_dir=settings.tokenizer_path,
            model_name=settings.model_name,
        ))
    from trt_server.engines.llamacpp import LlamaCppConfig, LlamaCppEngine
    from trt_server.jsonbudget import JsonLimits

    return LlamaCppEngine(LlamaCppConfig(
        model_path=settings.model_path,
        context_length=settings.context_length,
        slots=settings.max_concurrent,
        threads=settings.threads,
        gpu_layers=settings.gpu_layers,
        model_name=settings.model_name,
        verbose=settings.log_level.upper() == "DEBUG",
        json_limits=JsonLimits(settings.json_max_string_bytes, settings.json_max_items),
        prompt_cache_mib=settings.prompt_cache_mib,
        thread_poll=settings.thread_poll,
    ))
