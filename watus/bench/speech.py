"""`watus bench speech`: ASR latency and real-time factor per model, TTS time to first audio and real-time
factor, and VAD end of speech → transcript latency, as p50/p95 over WAVs the benchmark makes itself.

Three parts, each measured where its figure means something:
- ASR per model, in-process through the service's own runner (the model's cost without HTTP), on
  piper-spoken sentences of about 1.5, 3 and 6 s; word error rate against the text spoken.
- TTS through a real `python -m audio`, streamed over HTTP as the agent will use it: request sent →
  first audio byte, for one-sentence replies; real-time factor from the same requests.
- End of speech → transcript through the same process with a WAV file as its microphone, played in real
  time (utterances of ~3 s with pauses), read from the `transcript` events' own stage timings (t0 is the
  moment the VAD declared end of speech, on the shared monotonic clock). Run with speculative ASR (the
  default) and, for comparison, without it.

Results: one JSONL file per run, and the `bench:speech` section of `docs/benchmarks.md`. The pieces:
`speech_workload` (the sentences, their WAVs, word error rate), `speech_run` (the parts and the run),
`speech_report` (settings, results, goal checks, Markdown and JSONL); this module is the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from watus.bench.report import cell as _p
from watus.bench.speech_report import (
    GoalCheck,
    SpeechBenchConfig,
    SpeechBenchResult,
    goal_checks,
    render_markdown,
    write_jsonl,
)
from watus.bench.speech_run import bench_asr, bench_eos, bench_tts, run_speech_bench
from watus.bench.speech_workload import make_wavs, word_error_rate


def speech(
    asr_model: Annotated[list[str] | None, typer.Option(
        "--asr-model", "-m", help="ASR model to time, repeatable: tiny.en, base or a CTranslate2 folder. "
        "Default: tiny.en and base.")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per WAV (ASR) and per reply (TTS).")] = 3,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs before the timed ones.")] = 1,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads per model (default: cores, at most 4).")]
    = None,
    eos_rounds: Annotated[int, typer.Option(min=1, help="Passes over the live utterances (6 per pass, ~8 s "
                                            "each in real time).")] = 1,
    compare_plain: Annotated[bool, typer.Option("--compare-plain/--no-compare-plain", help="Also time end of "
                                                "speech → transcript without speculative ASR.")] = True,
    out_dir: Annotated[Path, typer.Option(help="Folder for the JSONL, the WAVs and service logs.")] = Path(
        "bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose speech section is rewritten.")] = Path(
        "docs/benchmarks.md"),
) -> None:
    """Time speech: ASR latency/RTF per model, TTS first audio/RTF, end of speech → transcript; goal check."""
    from rich.console import Console

    from watus.bench import update_markdown_section

    console = Console()
    cfg = SpeechBenchConfig(asr_models=tuple(asr_model or SpeechBenchConfig.asr_models), runs=runs, warmup=warmup,
                            eos_rounds=eos_rounds, compare_plain=compare_plain)
    if threads is not None:
        cfg.threads = threads
    result = run_speech_bench(cfg, out_dir, lambda msg: console.print(f"[bold]·[/bold] {msg}"))
    update_markdown_section(report, "speech", render_markdown(result))
    for name, type_, key in (("ASR latency ms", "asr", "latency_ms"), ("ASR RTF", "asr", "rtf"),
                             ("TTS first audio ms", "tts", "first_audio_ms"), ("TTS RTF", "tts", "rtf")):
        s = result.summary(type_, key)
        console.print(f"{name}: p50 {_p(s, 'p50', 3)}  p95 {_p(s, 'p95', 3)}")
    for g in goal_checks(result):
        verdict = ("[yellow]n/a[/yellow]" if g.passed is None
                   else "[green]PASS[/green]" if g.passed else "[red]FAIL[/red]")
        console.print(f"{verdict} {g.name}: {g.figures}  (goal {g.goal})")
    for e in result.errors:
        console.print(f"[red]problem:[/red] {e}")
    console.print(f"raw runs: {result.jsonl_path}\nreport: {report}")
    if not result.rows:
        raise typer.Exit(code=1)


__all__ = ["GoalCheck", "SpeechBenchConfig", "SpeechBenchResult", "bench_asr", "bench_eos", "bench_tts", "goal_checks",
           "make_wavs", "render_markdown", "run_speech_bench", "speech", "word_error_rate", "write_jsonl"]
