"""`python -m trt_server`: run the LLM server (what systemd's `ExecStart=` runs).

Flags override the `WATUS_LLM_*` settings. A model that cannot be found or loaded ends the process
with a one-line error saying what to do, and a non-zero status, never a traceback; so does an address off
loopback without an API key (`watus.core.security.check_bind`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from trt_server.app import create_app
from trt_server.engines.base import EngineError
from trt_server.settings import EngineKind, LLMSettings
from watus.core.logs import setup_logging
from watus.core.security import check_bind
from watus.core.serve import serve

log = logging.getLogger("trt_server")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trt_server", description="Watus OpenAI-compatible LLM server.")
    p.add_argument("--host", help="listen address (WATUS_LLM_HOST)")
    p.add_argument("--port", type=int, help="port (WATUS_LLM_PORT)")
    p.add_argument("--engine", choices=[e.value for e in EngineKind], help="engine (WATUS_LLM_ENGINE)")
    p.add_argument("--model", type=Path, help="GGUF file or engine directory (WATUS_LLM_MODEL_PATH)")
    p.add_argument("--tokenizer", type=Path, help="HF tokenizer directory for trtllm (WATUS_LLM_TOKENIZER_PATH)")
    p.add_argument("--threads", type=int, help="CPU threads (WATUS_LLM_THREADS)")
    p.add_argument("--log-level", help="logging level (WATUS_LLM_LOG_LEVEL)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    overrides = {k: v for k, v in {
        "host": args.host, "port": args.port, "engine": args.engine, "model_path": args.model,
        "tokenizer_path": args.tokenizer, "threads": args.threads, "log_level": args.log_level,
    }.items() if v is not None}
    try:
        settings = LLMSettings(**overrides)
    except ValidationError as e:
        print(f"trt_server: invalid settings:\n{e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_json)
    if not check_bind("LLM server", settings, settings.host, settings.port):
        return 2
    if settings.engine is EngineKind.llamacpp:
        from trt_server.engines.llamacpp import resolve_model_path

        try:
            resolve_model_path(settings.model_path)
        except EngineError as e:
            log.error("%s", e)
            return 2

    return serve(lambda on_failure: create_app(settings, on_load_failure=on_failure), settings.host, settings.port,
                 name="LLM server")

if __name__ == "__main__":
    sys.exit(main())
