"""`watus bench e2e`: spoken questions through every real process: sequential, streaming and preemptive.

The figure users feel is the true end of speech → first audio (perceived; e2e counts from the VAD's
decision instead); only a run of the real processes on one clock measures it, so this benchmark does what
a person would: it speaks questions (piper's voice, generated here, or the user's recordings) into the
audio service's virtual microphone, in real time, while the LLM server, the vision service (on an image or
video) and the agent run as they do on the robot. The agent's turn log is the measurement: every stage of
every turn on the machine-wide monotonic clock. Questions with a mid-sentence pause show whether a turn
ends while the person is still speaking (a cut-off). Once a reply has played a few seconds and the LLM is
idle, the benchmark stops the speaker, so a question need not wait out the 40 s a long reply can take.

Results: a JSONL (turns, per-mode summaries, telemetry, goal checks), a JSON summary (`--json`), the
`bench:e2e` section of `docs/benchmarks.md`, and a waterfall PNG beside it. The pieces:
- `e2e_questions`: question specs (text, text with `<500ms>` pauses, WAV files) and their audio;
- `e2e_workload`: the microphone folder, the image or video vision watches;
- `e2e_cutter` and `e2e_events`: the audio service's typed events: each reply cut, each utterance placed;
- `e2e_turns`: which question each turn answers, cut-offs, preemptive hits and misses;
- `e2e_run`: the processes, one pass of one mode, the whole run (`run_e2e_bench`);
- `e2e_report` (statistics), `e2e_goals` (goal checks), `e2e_writers` (Markdown, JSONL, JSON), `e2e_chart`;
- this module: the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from watus.bench.e2e_cutter import PlaybackCutter
from watus.bench.e2e_goals import goal_checks
from watus.bench.e2e_questions import LONG_QUESTIONS, PAUSED_QUESTIONS, QuestionError, parse_question
from watus.bench.e2e_report import KNOWN_MODES, MODES, E2EConfig, E2EResult, all_stats
from watus.bench.e2e_run import E2EBenchError, run_e2e_bench
from watus.bench.e2e_workload import WARMUP_QUESTION, closest_question, make_mic_folder
from watus.bench.e2e_writers import expected_paused


def _repeat(items: tuple[str, ...], n: int) -> tuple[str, ...]:
    return tuple(items[i % len(items)] for i in range(n))


def _questions(values: list[str] | None) -> tuple[str, ...]:
    """The questions of `--questions`: a number (the first N built-in ones), or text / WAV specs."""
    defaults = E2EConfig.questions
    if not values:
        return defaults
    if len(values) == 1 and values[0].strip().isdigit():
        n = int(values[0])
        if n < 1:
            raise typer.BadParameter("at least one question", param_hint="--questions")
        return _repeat(defaults, n)
    specs = tuple(v.strip() for v in values if v.strip())
    if not specs:
        raise typer.BadParameter("empty question", param_hint="--questions")
    for spec in specs:
        try:
            parse_question(spec)
        except QuestionError as e:
            raise typer.BadParameter(str(e), param_hint="--questions") from None
    return specs


def _default_image() -> Path:
    from vision.samples import sample_image

    try:
        return sample_image("bus.jpg")
    except FileNotFoundError as e:
        raise typer.BadParameter(f"{e}; or give --image/--video, or --no-vision", param_hint="--image") from None


def e2e(
    questions: Annotated[list[str] | None, typer.Option(
        "--questions", "-q", help="A number N (the first N built-in questions, repeated as needed), or "
        "questions, repeatable: text (spoken by piper; `<500ms>` inside it is a pause of that length) or a "
        "WAV file (a path ending in .wav, used as it is at 16 kHz; a .txt beside it gives its words). "
        "Default: the 4 built-in questions.")] = None,
    paused: Annotated[int, typer.Option(min=0, help="Built-in questions with a mid-sentence pause (350-600 ms) "
                                        f"spoken after --questions (of {len(PAUSED_QUESTIONS)}, repeated as "
                                        "needed); they show turns cut off. 0: none.")] = len(PAUSED_QUESTIONS),
    long: Annotated[int, typer.Option(min=0, help=f"Built-in long requests (5-7 s; of {len(LONG_QUESTIONS)}, "
                                      "repeated as needed) spoken after --questions: long enough to be "
                                      "transcribed while they are spoken (see --asr-incremental).")] = 0,
    runs: Annotated[int, typer.Option(min=1, help="Passes over the questions per mode, each with a fresh agent "
                                      "and audio service; passes alternate the modes' order.")] = 2,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up questions at the start of each pass.")] = 1,
    modes: Annotated[str, typer.Option(help="Pipelines to run, comma separated: sequential, streaming, "
                                       "preemptive (streaming + the reply started at the first pause + the "
                                       "end-of-turn model); also preemptive-tail (the preemptive reply, "
                                       "the turn ended by the silence tail as in streaming).")] = ",".join(MODES),
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
    voice_variation: Annotated[bool, typer.Option(help="Piper speaks the questions with its sampling noise, a "
                                                  "new rendition in every run; off: the same audio in every "
                                                  "run, so runs compare turn by turn.")] = False,
    asr_incremental: Annotated[bool | None, typer.Option(help="The audio service transcribes a long utterance "
                                                         "while it is spoken (WATUS_AUDIO_ASR_INCREMENTAL); "
                                                         "default: its own setting (on). Run with and without, "
                                                         "on --long questions, to see the gain.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Folder for the JSONL, the turn logs, WAVs and process logs.")]
    = Path("bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose e2e section is rewritten.")] = Path(
        "docs/benchmarks.md"),
    chart: Annotated[Path | None, typer.Option(help="Waterfall PNG (default: e2e_waterfall.png beside the "
                                               "report).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", dir_okay=False, help="Also write a machine-readable "
                                                  "summary here: per mode e2e and perceived p50/p95, turns, "
                                                  "cut-offs, preemptive hits and misses, goals.")] = None,
) -> None:
    """Spoken questions through every process: perceived, e2e and stage latency per pipeline, cut-offs,
    preemptive hit rate; goal checks."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    console = Console()
    if sum((image is not None, video is not None, no_vision)) > 1:
        raise typer.BadParameter("give one of --image, --video and --no-vision")
    source = None if no_vision else (image or video or _default_image())
    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    if not mode_list or any(m not in KNOWN_MODES for m in mode_list):
        raise typer.BadParameter(f"modes are {', '.join(KNOWN_MODES)}", param_hint="--modes")
    cfg = E2EConfig(questions=(*_questions(questions), *_repeat(LONG_QUESTIONS, long)),
                    paused_questions=_repeat(PAUSED_QUESTIONS, paused), asr_incremental=asr_incremental,
                    runs=runs, warmup=warmup, modes=mode_list,
                    vision_source=source, vision_fps=vision_fps, llm_url=llm_url, gap_s=gap, max_tokens=max_tokens,
                    playback_s=playback_s, voice_variation=voice_variation)
    chart_path = chart or report.parent / "e2e_waterfall.png"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        try:
            result = run_e2e_bench(cfg, out_dir, report, chart_path, on_progress, json_out)
        except E2EBenchError as e:
            console.print(f"[red]e2e benchmark failed:[/red] {e}")
            raise typer.Exit(code=1) from None
    stats = all_stats(result.turns, cfg.modes)
    for m, s in stats.items():
        e2e_ms = f"{s.e2e.p50:,.0f} / {s.e2e.p95:,.0f}" if s.e2e else "–"
        perceived = f"{s.perceived.p50:,.0f} / {s.perceived.p95:,.0f}" if s.perceived else "–"
        rate = f", preemptive hits {s.hits} / misses {s.misses} ({s.hit_rate:.0%})" if s.hit_rate is not None else ""
        console.print(f"{m}: perceived p50 / p95 {perceived} ms, e2e {e2e_ms} ms ({s.timed} timed turns, "
                      f"{s.cut_off_turns} cut off, {s.paused_cut_off} of {s.paused_questions} paused questions "
                      f"cut off, {s.interrupted} interrupted other than by the playback cut{rate})")
    for g in goal_checks(stats, expected_paused(result)):
        colour = {"PASS": "green", "FAIL": "red"}.get(g.verdict, "yellow")
        console.print(f"[{colour}]{g.verdict}[/{colour}] {g.name}: {g.figures}  (goal {g.goal})")
    for err in result.errors:
        console.print(f"[red]problem:[/red] {err}")
    console.print(f"raw data: {result.jsonl_path}\nchart: {result.chart_path}\nreport: {report}"
                  + (f"\nsummary: {json_out}" if json_out else ""))
    if not any(s.timed for s in stats.values()):
        raise typer.Exit(code=1)


__all__ = ["WARMUP_QUESTION", "E2EBenchError", "E2EConfig", "E2EResult", "PlaybackCutter", "closest_question", "e2e",
           "make_mic_folder", "run_e2e_bench"]
