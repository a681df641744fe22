"""`watus bench ...`: the command-line face of the benchmarks (mounted by `watus.cli` as `bench`).

Only this layer prints. Progress is redrawn between runs, never on a timer, so the terminal does not
take CPU from the model being timed on a small machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from watus.bench import update_markdown_section
from watus.bench.degradation import degradation
from watus.bench.duplex import duplex
from watus.bench.e2e import e2e
from watus.bench.llm import DEFAULT_TARGETS, BenchConfig, BenchResult, goal_checks, parse_target, render_markdown
from watus.bench.load import load
from watus.bench.soak import soak
from watus.bench.speech import speech
from watus.bench.stats import Summary, fmt
from watus.bench.vision import vision

bench_app = typer.Typer(help="Benchmarks: LLM serving targets side by side, written to docs/benchmarks.md.",
                        no_args_is_help=True)
log = logging.getLogger(__name__)


@bench_app.callback()
def _bench() -> None:
    """Benchmarks of Watus' processes and of the engines they are compared with."""


def _parse_levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise typer.BadParameter(f"expected numbers separated by commas, got {text!r}") from None
    if any(c < 1 for c in levels):
        raise typer.BadParameter("concurrency levels must be ≥ 1")
    return levels


def _p50(summary: Summary | None, digits: int = 1) -> str:
    return fmt(summary.p50 if summary is not None else None, digits)


def _print_summary(console: Console, result: BenchResult) -> None:
    table = Table(title="LLM targets (p50)")
    for col in ("target", "prompt tok", "output tok", "TTFT ms", "prefill tok/s", "decode tok/s", "wall ms"):
        table.add_column(col, justify="left" if col == "target" else "right", overflow="fold")
    for t in result.targets:
        if t.error is not None:
            table.add_row(t.spec, "[red]failed[/red]", "", "", "", "", t.error[:60])
            continue
        s = t.stats()
        table.add_row(t.spec, _p50(s["prompt_tokens"], 0), _p50(s["completion_tokens"], 0), _p50(s["ttft_ms"]),
                      _p50(s["prefill_tps"], 0), _p50(s["decode_tps"]), _p50(s["wall_ms"], 0))
    console.print(table)
    for g in goal_checks(result):
        colour = {"PASS": "green", "FAIL": "red"}.get(g.verdict, "yellow")
        console.print(f"[{colour}]{g.verdict}[/{colour}] {g.name}: {g.figures}  (goal {g.goal})")


@bench_app.command("llm")
def llm(
    target: Annotated[list[str] | None, typer.Option(
        "--target", "-t", help="kind:value, repeatable: openai:<url>, ollama:<url>, inprocess:<gguf|default>, "
        "llamacpp-server:<gguf|default>, self:[WATUS_LLM_KEY=VALUE,...]. Default: self:, inprocess:default, "
        "llamacpp-server:default.")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per target.")] = 10,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs per target before the timed ones.")] = 2,
    prompt_tokens: Annotated[int, typer.Option(min=1, help="Prompt length in the target's tokens.")] = 128,
    max_tokens: Annotated[int, typer.Option(min=1, help="Output length (forced with ignore_eos).")] = 128,
    concurrency: Annotated[str, typer.Option(help="Parallel streams per sweep level for HTTP targets "
                                                  "('' for none).")] = "1,2,4",
    concurrency_rounds: Annotated[int, typer.Option(min=1, help="Rounds per concurrency level.")] = 2,
    threads: Annotated[int | None, typer.Option(min=1, help="llama.cpp threads for inprocess, "
                                                   "llamacpp-server and self (default: cores, at most 8).")] = None,
    slots: Annotated[int, typer.Option(min=1, help="Parallel sequences of llamacpp-server and self "
                                       "(WATUS_LLM_MAX_CONCURRENT).")] = 2,
    context_length: Annotated[int, typer.Option(min=128, help="Context per sequence.")] = 2048,
    chat: Annotated[bool, typer.Option("--chat/--completions", help="Chat endpoint instead of "
                                       "completions (prompt tokens then include the template).")] = False,
    model: Annotated[str | None, typer.Option(help="Model name for openai/ollama targets "
                                                 "(default: the first the server lists).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="WATUS_BENCH_API_KEY",
                                                   help="Bearer key for openai/ollama targets.")] = None,
    ours: Annotated[str | None, typer.Option(help="Target that is our server in the goal check "
                                                "(default: the self: target).")] = None,
    feature_runs: Annotated[int, typer.Option(min=0, help="Runs per variant of the sampling-features comparison "
                                              "(plain, logprobs top 5, n=2) on our server; 0 skips it.")] = 3,
    out_dir: Annotated[Path, typer.Option(help="Folder for the JSONL and server logs.")] = Path("bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose LLM section is rewritten.")] = Path(
        "docs/benchmarks.md"),
) -> None:
    """Time LLM targets side by side: TTFT, prefill and decode tok/s, concurrency, telemetry, goal check."""
    from watus.bench.llm import run_benchmark

    console = Console()
    try:
        specs = [parse_target(t) for t in (target or DEFAULT_TARGETS)]
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--target") from None
    levels = _parse_levels(concurrency)
    kwargs = {"threads": threads} if threads is not None else {}
    cfg = BenchConfig(runs=runs, warmup=warmup, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                      concurrency=levels, concurrency_rounds=concurrency_rounds, slots=slots,
                      context_length=context_length, chat=chat, model=model, api_key=api_key, ours=ours,
                      feature_runs=feature_runs,
                      **kwargs)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, auto_refresh=False) as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done, total=total)
            progress.refresh()

        result = run_benchmark(specs, cfg, out_dir, on_progress)
    update_markdown_section(report, "llm", render_markdown(result))
    _print_summary(console, result)
    console.print(f"raw runs: {result.jsonl_path}\nreport: {report}")
    if all(t.error is not None for t in result.targets):
        raise typer.Exit(code=1)


bench_app.command("speech")(speech)
bench_app.command("degradation")(degradation)
bench_app.command("vision")(vision)
bench_app.command("e2e")(e2e)
bench_app.command("duplex")(duplex)
bench_app.command("load")(load)
bench_app.command("soak")(soak)


if __name__ == "__main__":
    bench_app()
