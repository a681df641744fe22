"""`watus bench e2e`: spoken questions through every real process, streaming against the sequential baseline.

The figure users feel is end of speech → first audio (e2e); only a run of the real processes on one
clock measures it, so this benchmark does what a person would: it speaks questions (piper's voice,
generated here) into the audio service's virtual microphone, in real time, while the LLM server, the
vision service (on an image or video) and the agent run as they do on the robot. The agent's turn log
is the measurement: every stage of every turn on the machine-wide monotonic clock. Once a reply has
played a few seconds and the LLM is idle, the benchmark stops the speaker, so a question need not wait
out the 40 s a long reply can take.

Results: a JSONL (turns, per-mode summaries, telemetry, goal checks), the `bench:e2e` section of
`docs/benchmarks.md`, and a waterfall PNG beside it. The pieces:
- `e2e_workload`: the spoken questions (the microphone folder), which question a transcript was, the
  image or video vision watches;
- `e2e_cutter`: `PlaybackCutter`, which follows the audio service's typed events and cuts each reply;
- `e2e_run`: the processes, one pass of one mode, the whole run (`run_e2e_bench`);
- `e2e_report`: configuration, result, statistics, goal checks and the writers;
- this module: the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from watus.bench.e2e_cutter import PlaybackCutter
from watus.bench.e2e_report import MODES, E2EConfig, E2EResult, goal_checks, mode_stats
from watus.bench.e2e_run import E2EBenchError, run_e2e_bench
from watus.bench.e2e_workload import WARMUP_QUESTION, closest_question, make_mic_folder


def _questions(values: list[str] | None) -> tuple[str, ...]:
    defaults = E2EConfig.questions
    if not values:
        return defaults
    if len(values) == 1 and values[0].strip().isdigit():
        n = int(values[0])
        if n < 1:
            raise typer.BadParameter("at least one question", param_hint="--questions")
        return tuple(defaults[i % len(defaults)] for i in range(n))
    texts = tuple(v.strip() for v in values if v.strip())
    if not texts:
        raise typer.BadParameter("empty question", param_hint="--questions")
    return texts


def _default_image() -> Path:
    from vision.samples import sample_image

    try:
        return sample_image("bus.jpg")
    except FileNotFoundError as e:
        raise typer.BadParameter(f"{e}; or give --image/--video, or --no-vision", param_hint="--image") from None


def e2e(
    questions: Annotated[list[str] | None, typer.Option(
        "--questions", "-q", help="A number N (the first N built-in questions, repeated as needed) or the "
        "questions' text, repeatable. Default: the 4 built-in questions.")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Passes over the questions per mode, each with a fresh agent "
                                      "and audio service; passes alternate the modes' order.")] = 2,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up questions at the start of each pass.")] = 1,
    modes: Annotated[str, typer.Option(help="Pipelines to run, comma separated.")] = "streaming,sequential",
    image: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Image the vision service "
                                               "watches (default: the bus.jpg sample in the model cache).")] = None,
    video: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Video file the vision "
                                               "service watches (looped).")] = None,
    no_vision: Annotated[bool, typer.Option("--no-vision", help="Run without the vision service.")] = False,
    vision_fps: Annotated[float, typer.Option(min=0.1, help="Frames per second the vision service takes from "
                                              "the image or video (the CPU it leaves to the rest).")] = 2.0,
    llm_url: Annotated[str | None, typer.Option(help="Use this LLM server instead of starting "
                                                "`python -m trt_server`.")] = None,
    gap: Annotated[float, typer.Option(min=1, max=60, help="Silence after each question (s): time for the "
                                       "reply to be thought, started, and cut.")] = 16.0,
    playback_s: Annotated[float, typer.Option(min=0, help="Seconds of each reply played before the benchmark "
                                              "stops the speaker (after e2e is measured); 0: replies play to the "
                                              "end, and --gap must outlast the longest.")] = 6.0,
    max_tokens: Annotated[int | None, typer.Option(min=8, help="The agent's reply limit in tokens (default: the "
                                                   "agent's own setting).")] = None,
    out_dir: Annotated[Path, typer.Option(help="Folder for the JSONL, the turn logs, WAVs and process logs.")]
    = Path("bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose e2e section is rewritten.")] = Path(
        "docs/benchmarks.md"),
    chart: Annotated[Path | None, typer.Option(help="Waterfall PNG (default: e2e_waterfall.png beside the "
                                               "report).")] = None,
) -> None:
    """Spoken questions through every process: e2e and stage latency, streaming vs sequential; goal check."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    console = Console()
    if sum((image is not None, video is not None, no_vision)) > 1:
        raise typer.BadParameter("give one of --image, --video and --no-vision")
    source = None if no_vision else (image or video or _default_image())
    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    if not mode_list or any(m not in MODES for m in mode_list):
        raise typer.BadParameter(f"modes are {', '.join(MODES)}", param_hint="--modes")
    cfg = E2EConfig(questions=_questions(questions), runs=runs, warmup=warmup, modes=mode_list,
                    vision_source=source, vision_fps=vision_fps, llm_url=llm_url, gap_s=gap, max_tokens=max_tokens,
                    playback_s=playback_s)
    chart_path = chart or report.parent / "e2e_waterfall.png"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        try:
            result = run_e2e_bench(cfg, out_dir, report, chart_path, on_progress)
        except E2EBenchError as e:
            console.print(f"[red]e2e benchmark failed:[/red] {e}")
            raise typer.Exit(code=1) from None
    stats = {m: mode_stats(result.turns, m) for m in cfg.modes}
    for m, s in stats.items():
        p50 = f"{s.e2e.p50:,.0f}" if s.e2e else "–"
        p95 = f"{s.e2e.p95:,.0f}" if s.e2e else "–"
        console.print(f"{m}: e2e p50 {p50} ms, p95 {p95} ms ({s.timed} timed turns, {s.interrupted} interrupted "
                      "other than by the playback cut)")
    for g in goal_checks(stats):
        colour = {"PASS": "green", "FAIL": "red"}.get(g.verdict, "yellow")
        console.print(f"[{colour}]{g.verdict}[/{colour}] {g.name}: {g.figures}  (goal {g.goal})")
    for err in result.errors:
        console.print(f"[red]problem:[/red] {err}")
    console.print(f"raw data: {result.jsonl_path}\nchart: {result.chart_path}\nreport: {report}")
    if not any(s.timed for s in stats.values()):
        raise typer.Exit(code=1)


__all__ = ["WARMUP_QUESTION", "E2EBenchError", "E2EConfig", "E2EResult", "PlaybackCutter", "closest_question", "e2e",
           "make_mic_folder", "run_e2e_bench"]
