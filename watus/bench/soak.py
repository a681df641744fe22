"""`watus bench soak`: spoken turns through all four real processes for N minutes; does anything grow?

A robot runs for hours; a leak of a few kB per turn, a socket or thread left behind per request, is
invisible in a benchmark of minutes and fatal in a day. This command runs the robot's processes as they
run on it, speaks questions into the microphone back to back, samples each process's RSS, open file
descriptors and threads, and judges growth after a warm-up (`soak_verdict` documents the method) and that
every question asked got exactly one turn record that did not fail.

The pieces: `soak_run` (the processes and the run), `soak_sampler` (the readings), `soak_verdict` (the pure
verdicts), `soak_report` (CSV, JSON, the RSS plot, the Markdown section); this module is the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from watus.bench.soak_run import DEFAULT_QUESTIONS, SoakConfig, SoakError, SoakResult, run_soak
from watus.bench.soak_verdict import Thresholds


def _questions(folder: Path | None) -> tuple[str, ...]:
    """The WAV files of `--questions` (sorted; a `.txt` beside each gives its words), or the built-in texts."""
    if folder is None:
        return DEFAULT_QUESTIONS
    wavs = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() == ".wav")
    if not wavs:
        raise typer.BadParameter(f"no .wav files in {folder}", param_hint="--questions")
    return tuple(wavs)


def write_outputs(result: SoakResult, out_dir: Path, report: Path | None, chart: Path | None,
                  json_out: Path | None) -> None:
    """The CSV and JSON (in `out_dir`, and `json_out` where given), the plot and the report section."""
    from watus.bench import update_markdown_section
    from watus.bench.e2e_writers import chart_link
    from watus.bench.soak_report import render_markdown, rss_chart, write_csv, write_json

    stamp = result.stamp or "run"
    result.csv_path = write_csv(out_dir / f"soak-{stamp}.csv", result)
    if chart is not None and result.samples:
        try:
            result.chart_path = rss_chart(result, chart)
        except ImportError:  # matplotlib is the `bench` extra: without it, no plot rather than no report
            result.chart_path = None
    result.json_path = json_out or out_dir / f"soak-{stamp}.json"
    write_json(result.json_path, result)
    if report is not None:
        link = chart_link(result.chart_path, report) if result.chart_path is not None else None
        update_markdown_section(report, "soak", render_markdown(result, link))


def soak(
    minutes: Annotated[float, typer.Option(min=0.5, help="How long the questions play (sampling time).")] = 30.0,
    warmup_s: Annotated[float, typer.Option("--warmup-s", min=0, help="Seconds at the start that are not judged "
                                            "(models and pools settle).")] = 120.0,
    window_s: Annotated[float, typer.Option("--window-s", min=5, help="Length of the first and last windows "
                                            "whose RSS medians are compared.")] = 60.0,
    interval_s: Annotated[float, typer.Option("--interval-s", min=0.5, help="Seconds between samples.")] = 5.0,
    rss_growth: Annotated[float, typer.Option(min=0, help="Largest RSS growth that passes (%).")] = 5.0,
    fd_margin: Annotated[int, typer.Option(min=0, help="Open fds the last window may exceed the baseline by.")] = 4,
    thread_margin: Annotated[int, typer.Option(min=0, help="Threads the last window may exceed the baseline "
                                               "by.")] = 3,
    questions: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="A folder of WAV questions "
                                                   "(any rate; a .txt beside each gives its words); default: "
                                                   f"{len(DEFAULT_QUESTIONS)} built-in questions spoken by "
                                                   "piper.")] = None,
    video: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Video file vision watches "
                                               "(looped); default: the synthetic demo video.")] = None,
    vision_fps: Annotated[float, typer.Option(min=0.1, help="Frames per second vision takes.")] = 2.0,
    gap: Annotated[float, typer.Option(min=2, max=60, help="Silence after each question (s).")] = 14.0,
    playback_s: Annotated[float, typer.Option(min=0, help="Seconds of each reply played before it is "
                                              "stopped.")] = 3.0,
    max_tokens: Annotated[int | None, typer.Option(min=8, help="The agent's reply limit in tokens.")] = 48,
    out_dir: Annotated[Path, typer.Option(help="Folder for the CSV, JSON, turn log and process logs.")] = Path(
        "bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose soak section is rewritten.")] = Path(
        "docs/benchmarks.md"),
    chart: Annotated[Path | None, typer.Option(help="RSS plot (default: img/soak_rss.png beside the "
                                               "report).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", dir_okay=False, help="The samples and verdicts as "
                                                  "JSON here (default: in --out-dir).")] = None,
) -> None:
    """Spoken turns through all four processes for N minutes: RSS, fds and threads growth, lost turns."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from watus.bench.soak_report import summary_rows

    console = Console()
    th = Thresholds(warmup_s=warmup_s, window_s=window_s, rss_growth_percent=rss_growth, fd_margin=fd_margin,
                    thread_margin=thread_margin)
    cfg = SoakConfig(minutes=minutes, thresholds=th, interval_s=interval_s, questions=_questions(questions),
                     video=video, vision_fps=vision_fps, gap_s=gap, playback_s=playback_s, max_tokens=max_tokens)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, auto_refresh=False) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)
            bar.refresh()  # about once a second while the soak runs: no redraw timer taking CPU from it

        try:
            result = run_soak(cfg, out_dir, on_progress)
        except SoakError as e:
            console.print(f"[red]soak failed:[/red] {e}")
            raise typer.Exit(code=1) from None
    write_outputs(result, out_dir, report, chart or report.parent / "img" / "soak_rss.png", json_out)
    table = Table(title=f"Soak, {result.duration_s / 60:.1f} min")
    for col in ("", "figures", "verdict"):
        table.add_column(col, overflow="fold")
    for what, figures, verdict in summary_rows(result):
        colour = "green" if verdict == "PASS" else "red"
        table.add_row(what, figures, f"[{colour}]{verdict}[/{colour}]")
    console.print(table)
    for p in result.turns.problems if result.turns else []:
        console.print(f"[red]problem:[/red] {p}")
    console.print(f"samples: {result.csv_path}\nsummary: {result.json_path}\nplot: {result.chart_path}\n"
                  f"report: {report}")
    if result.verdict != "PASS":
        raise typer.Exit(code=1)
