"""`python -m watus`: the agent process (voice loop + /health, /metrics, /v1/chat), as systemd runs it.

Off loopback without an API key it refuses to start, as every Watus process does (`watus.core.security`).
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from watus.agent.app import create_app
from watus.agent.settings import AgentSettings
from watus.core.logs import setup_logging
from watus.core.security import check_bind
from watus.core.serve import serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m watus", description="Watus agent process.")
    p.add_argument("--host", help="listen address (WATUS_AGENT_HOST)")
    p.add_argument("--port", type=int, help="port (WATUS_AGENT_PORT)")
    p.add_argument("--no-voice", action="store_true", help="serve /v1/chat only, without the voice loop")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    try:
        settings = AgentSettings(**overrides)
    except ValidationError as e:
        print(f"watus agent: invalid settings:\n{e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_json)
    if not check_bind("agent", settings, settings.host, settings.port):
        return 2
    return serve(lambda _: create_app(settings, voice_loop=not args.no_voice), settings.host, settings.port,
                 name="agent")

if __name__ == "__main__":
    sys.exit(main())
