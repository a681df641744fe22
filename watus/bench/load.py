"""`watus bench load`: do the services stay correct and responsive when many clients come at once?

Two parts, one after the other so they never share the CPU:
1. the LLM server with its default admission settings gets a burst of streaming chat requests (32 by
   default, more than slots + queue): the admitted ones must stream valid SSE to `data: [DONE]`, the
   rest must be refused at once with 503 + `Retry-After` + an error body, `/health` must answer within
   100 ms throughout, and single-request TTFT must come back after the burst (`load_llm`);
2. the vision service's pipeline runs unpaced on the demo video while 8 clients read `GET /v1/scene`
   at 200 requests/s in all: no errors, the rate achieved, latency, and the FPS it costs (`load_vision`).

Results (`load_report`): a table with PASS/FAIL per goal, the `bench:load` section of
docs/benchmarks.md, and `--json FILE`. Only the command function prints.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from watus.bench import machine_info, update_markdown_section
from watus.bench.load_report import PACKAGES, LoadConfig, LoadResult, as_json, goal_checks, passed, render_markdown

log = logging.getLogger(__name__)


def run_load(cfg: LoadConfig, out_dir: Path, say: Callable[[str], None] = lambda _: None) -> LoadResult:
    """Both parts as `cfg` asks; a part whose service does not start is recorded as its error."""
    from watus.bench.load_llm import run_llm_load
    from watus.bench.load_vision import run_vision_load

    out_dir.mkdir(parents=True, exist_ok=True)
    result = LoadResult(config=cfg, started=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        machine=machine_info(PACKAGES))
    if cfg.llm:
        say(f"LLM: {cfg.llm_streams} streams at once against trt_server (default admission settings)")
        try:
            result.llm = run_llm_load(cfg, out_dir)
        except RuntimeError as e:  # the service did not start, or a single request failed
            log.error("LLM load: %s", e)
            result.llm_error = str(e)
    if cfg.vision:
        say(f"vision: {cfg.vision_clients} clients at {cfg.vision_rps:g} GET /v1/scene per s for {cfg.seconds:g} s")
        try:
            result.vision = run_vision_load(cfg, out_dir)
        except (RuntimeError, FileNotFoundError) as e:
            log.error("vision load: %s", e)
            result.vision_error = str(e)
    return result


def load(
    llm_streams: Annotated[int, typer.Option(min=1, help="Streaming chat requests sent at once.")] = 32,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per stream (forced with ignore_eos).")] = 32,
    vision_rps: Annotated[float, typer.Option(min=1, help="GET /v1/scene per second, all clients.")] = 200.0,
    vision_clients: Annotated[int, typer.Option(min=1, help="Scene clients (one thread each).")] = 8,
    seconds: Annotated[float, typer.Option(min=1, help="Scene load, and the FPS baseline before it (s).")] = 10.0,
    llm: Annotated[bool, typer.Option("--llm/--no-llm", help="Run the LLM burst.")] = True,
    vision: Annotated[bool, typer.Option("--vision/--no-vision", help="Run the scene load.")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", dir_okay=False, help="Write every figure as JSON "
                                                  "here.")] = None,
    no_write: Annotated[bool, typer.Option("--no-write", help="Do not touch the Markdown report.")] = False,
    out_dir: Annotated[Path, typer.Option(help="Folder for the service logs and the video.")] = Path("bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose load section is rewritten.")] = Path(
        "docs/benchmarks.md"),
) -> None:
    """Load: an LLM burst over slots + queue (valid SSE or an immediate 503, /health ≤ 100 ms, TTFT recovery)
    and many GET /v1/scene clients on a running vision pipeline (errors, latency, FPS drop)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cfg = LoadConfig(llm_streams=llm_streams, llm_max_tokens=max_tokens, vision_rps=vision_rps,
                     vision_clients=vision_clients, seconds=seconds, llm=llm, vision=vision)
    result = run_load(cfg, out_dir, lambda line: console.print(f"[dim]load[/dim] {line}"))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(as_json(result), indent=1, default=str) + "\n", encoding="utf-8")
    if not no_write:
        update_markdown_section(report, "load", render_markdown(result, json_out))
    goals = goal_checks(result)
    table = Table(title="watus bench load")
    for col in ("check", "goal", "figures", "result"):
        table.add_column(col, overflow="fold")
    colours = {"PASS": "green", "FAIL": "red"}
    for g in goals:
        colour = colours.get(g.verdict, "yellow")
        table.add_row(g.name, g.goal, g.figures, f"[{colour}]{g.verdict}[/{colour}]")
    console.print(table)
    if not no_write:
        console.print(f"report: {report}")
    if not passed(goals):
        raise typer.Exit(code=1)
