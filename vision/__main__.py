"""`python -m vision`: run the vision service (what systemd's `ExecStart=` runs).

Flags override the `WATUS_VISION_*` settings. A model file that is missing ends the process with one
line naming the setting and `watus models setup`, and a non-zero status, never a traceback; so does a
model that cannot be loaded, and an address off loopback without an API key (`watus.core.security`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from vision.app import create_app
from vision.settings import VisionSettings
from watus.core.logs import setup_logging
from watus.core.security import check_bind
from watus.core.serve import serve

log = logging.getLogger("vision")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vision", description="Watus vision service.")
    p.add_argument("--host", help="listen address (WATUS_VISION_HOST)")
    p.add_argument("--port", type=int, help="port (WATUS_VISION_PORT)")
    p.add_argument("--source", help="camera index, video file, URL or image folder (WATUS_VISION_SOURCE)")
    p.add_argument("--loop", action=argparse.BooleanOptionalAction, default=None,
                   help="loop a video file or folder (WATUS_VISION_LOOP)")
    p.add_argument("--source-fps", type=float, help="pace of a file or folder; 0: as fast as processed "
                   "(WATUS_VISION_SOURCE_FPS)")
    p.add_argument("--model", type=Path, help="detector .onnx/.engine/.pt (WATUS_VISION_DETECTOR_MODEL)")
    p.add_argument("--confidence", type=float, help="minimum confidence (WATUS_VISION_CONFIDENCE)")
    p.add_argument("--classes", help="class names to keep, comma separated (WATUS_VISION_CLASSES)")
    p.add_argument("--faces", action=argparse.BooleanOptionalAction, default=None,
                   help="face attributes (WATUS_VISION_FACES)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (WATUS_VISION_THREADS)")
    p.add_argument("--log-level", help="logging level (WATUS_VISION_LOG_LEVEL)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    overrides = {k: v for k, v in {
        "host": args.host, "port": args.port, "source": args.source, "loop": args.loop,
        "source_fps": args.source_fps, "detector_model": args.model, "confidence": args.confidence,
        "classes": args.classes, "faces": args.faces, "threads": args.threads, "log_level": args.log_level,
    }.items() if v is not None}
    try:
        settings = VisionSettings(**overrides)
    except ValidationError as e:
        print(f"vision: invalid settings:\n{e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_json)
    if not check_bind("vision", settings, settings.host, settings.port):
        return 2
    # The pipeline thread runs Python between its native calls; at the default 5 ms GIL switch
    # interval a request could wait that long for the interpreter.
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    for setting, path in settings.model_files().items():
        if not path.is_file():
            log.error("model file not found: %s (%s); run `watus models setup` to prepare the defaults, or point "
                      "%s at an existing file", path, setting, setting)
            return 2

    return serve(lambda on_failure: create_app(settings, on_load_failure=on_failure), settings.host, settings.port,
                 name="vision", graceful_s=3)

if __name__ == "__main__":
    sys.exit(main())
