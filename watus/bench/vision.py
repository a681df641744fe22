"""`watus bench vision`: does the vision service cost anything over its bare detector?

Two measurements on the same video frames, one after the other so they never share the CPU:
1. the bare detector (the engine the service runs, loaded in this process): every frame of the
   video decoded into memory first, then timed through `detect()` in a loop;
2. the whole service (`python -m vision` as its own process) reading the same video as its camera,
   unpaced (`WATUS_VISION_SOURCE_FPS=0`: the grabber decodes the next frame as soon as the pipeline
   took the last one), with faces, tracking and serialisation. Its FPS comes from the scene sequence
   numbers over a window, its per-stage ms from the scenes' own timings.
Then, with the pipeline still running, `GET /v1/scene` is hammered from a keep-alive client to get
its latency percentiles: the scene is pre-serialised, so this must stay in single milliseconds.

Goals (the issue): service FPS ≥ 0.9 × bare detector FPS; `GET /v1/scene` p99 ≤ 5 ms. On the robot
the anchor is Ultralytics' published YOLO11n TensorRT FP16 inference: 2.55 ms on an AGX Orin.

The pieces: `vision_run` (the two runs and the whole benchmark), `vision_poll` (the scene polling
client), `vision_report` (settings, results, goal checks, Markdown and JSONL); this module is the command.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from watus.bench import update_markdown_section
from watus.bench.vision_report import (
    DetectorRun,
    Goal,
    ServiceRun,
    VisionBenchConfig,
    VisionBenchResult,
    goal_checks,
    render_markdown,
    write_jsonl,
)
from watus.bench.vision_run import bench_detector, bench_service, run_vision_bench


def vision(
    seconds: Annotated[float, typer.Option(min=1, help="Measuring window of each run (s).")] = 20.0,
    latency_seconds: Annotated[float, typer.Option(min=1, help="GET /v1/scene latency burst (s).")] = 5.0,
    warmup: Annotated[float, typer.Option(min=0, help="Service warm-up before measuring (s).")] = 3.0,
    video: Annotated[Path | None, typer.Option(help="Video file to use (default: one made from the "
                                               "sample images).", exists=True, dir_okay=False)] = None,
    model: Annotated[Path | None, typer.Option(help="Detector model (default: the service's).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="ONNX Runtime threads (default: cores, "
                                                "at most 8).")] = None,
    faces: Annotated[bool, typer.Option("--faces/--no-faces", help="Faces on in the service run.")] = True,
    face_every_n: Annotated[int, typer.Option(min=1, help="WATUS_VISION_FACE_EVERY_N of the service.")] = 10,
    compare_faces: Annotated[bool, typer.Option("--compare-faces/--no-compare-faces", help="Also compare the "
                                                "face detectors (Haar vs CenterFace) on the sample images.")] = True,
    out_dir: Annotated[Path, typer.Option(help="Folder for the JSONL, video and service log.")] = Path(
        "bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose vision section is rewritten.")] = Path(
        "docs/benchmarks.md"),
) -> None:
    """Vision: service FPS vs the bare detector on the same video, per-stage ms, GET /v1/scene latency."""
    from rich.console import Console

    console = Console()
    kwargs: dict[str, Any] = {"threads": threads} if threads is not None else {}
    cfg = VisionBenchConfig(seconds=seconds, latency_seconds=latency_seconds, warmup_s=warmup, video=video,
                            model=model, faces=faces, face_every_n=face_every_n, **kwargs)
    lock = threading.Lock()

    def progress(phase: str, line: str) -> None:
        with lock:
            console.print(f"[dim]{phase}[/dim] {line}")

    try:
        result = run_vision_bench(cfg, out_dir, progress)
    except (RuntimeError, FileNotFoundError) as e:
        console.print(f"[red]vision benchmark failed:[/red] {e}")
        raise typer.Exit(1) from None
    markdown = render_markdown(result)
    if compare_faces:
        from watus.bench.vision_faces import face_figures, render_faces

        progress("faces", "Haar vs CenterFace on the sample images")
        markdown += "\n" + render_faces(face_figures(threads))
    update_markdown_section(report, "vision", markdown)
    console.print(markdown)
    console.print(f"raw runs: {result.jsonl_path}\nreport: {report}")


__all__ = ["DetectorRun", "Goal", "ServiceRun", "VisionBenchConfig", "VisionBenchResult", "bench_detector",
           "bench_service", "goal_checks", "render_markdown", "run_vision_bench", "vision", "write_jsonl"]
