"""`watus bench vision`'s settings, results and what is written of them: goal checks, the Markdown section
and the JSONL.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from watus.bench.report import jsonable as _jsonable
from watus.bench.report import row as _row
from watus.bench.stats import Summary, fmt, percentile

GOAL_FPS_RATIO = 0.9
GOAL_SCENE_P99_MS = 5.0
STAGES = ("preprocess_ms", "inference_ms", "postprocess_ms", "tracking_ms", "faces_ms", "total_ms")
PACKAGES = ("onnxruntime", "opencv-python-headless", "numpy")

#: Other processes' CPU share above which a run is called noisy in the report.
NOISY_OTHER_CPU_PERCENT = 10.0


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))  # the vision service's own default (WATUS_VISION_THREADS)


@dataclass(frozen=True)
class VisionBenchConfig:
    seconds: float = 20.0
    latency_seconds: float = 5.0
    warmup_s: float = 3.0
    frames_per_part: int = 30
    threads: int = field(default_factory=_default_threads)
    faces: bool = True
    face_every_n: int = 10
    #: Scene polls per second while measuring FPS (enough to see most scenes) and for the latency burst.
    poll_hz: float = 20.0
    latency_hz: float = 100.0
    video: Path | None = None
    model: Path | None = None
    startup_timeout_s: float = 120.0


@dataclass
class DetectorRun:
    frames: int
    seconds: float
    stages: dict[str, Summary | None]
    samples: list[dict[str, float]] = field(default_factory=list)
    other_cpu_percent: float | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ServiceRun:
    scenes: int
    seconds: float
    stages: dict[str, Summary | None]
    reported_fps: Summary | None
    faces_seen: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: GET /v1/scene latency from a raw socket client (the goal) and through httpx (for reference).
    latency_ms: list[float] = field(default_factory=list)
    httpx_latency_ms: list[float] = field(default_factory=list)
    latency_fps: float = 0.0
    errors: int = 0
    other_cpu_percent: float | None = None

    @property
    def fps(self) -> float:
        return self.scenes / self.seconds if self.seconds > 0 else 0.0

    def latency(self, httpx_client: bool = False) -> dict[str, float] | None:
        ms = self.httpx_latency_ms if httpx_client else self.latency_ms
        if not ms:
            return None
        return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
                "max": max(ms)}


@dataclass
class VisionBenchResult:
    config: VisionBenchConfig
    started: str
    machine: dict[str, str]
    video: str
    video_frames: int
    detector: DetectorRun
    service: ServiceRun
    detector_info: dict[str, Any]
    jsonl_path: Path | None = None

    @property
    def fps_ratio(self) -> float:
        return self.service.fps / self.detector.fps if self.detector.fps else 0.0


def write_jsonl(path: Path, result: VisionBenchResult) -> None:
    """A meta line, one line per detector frame and per service scene, then the summary with the goals."""
    lines: list[dict[str, Any]] = [{"type": "meta", "bench": "vision", "started": result.started,
                                    "config": asdict(result.config), "machine": result.machine,
                                    "video": result.video, "detector": result.detector_info}]
    lines += [{"type": "detector_frame", **s} for s in result.detector.samples]
    lines += [{"type": "service_scene", **s} for s in result.service.samples]
    lines.append({"type": "scene_latency", "client": "raw-socket",
                  "ms": [round(x, 3) for x in result.service.latency_ms]})
    lines.append({"type": "scene_latency", "client": "httpx",
                  "ms": [round(x, 3) for x in result.service.httpx_latency_ms]})
    lines.append({"type": "summary", "detector_fps": result.detector.fps, "service_fps": result.service.fps,
                  "fps_ratio": result.fps_ratio, "detector_stages": result.detector.stages,
                  "service_stages": result.service.stages, "scene_latency_ms": result.service.latency(),
                  "scene_latency_ms_httpx": result.service.latency(httpx_client=True),
                  "service_fps_during_latency_burst": result.service.latency_fps,
                  "failed_requests": result.service.errors,
                  "other_cpu_percent": {"detector": result.detector.other_cpu_percent,
                                        "service": result.service.other_cpu_percent},
                  "goals": [{**asdict(g), "verdict": g.verdict} for g in goal_checks(result)]})
    path.write_text("".join(json.dumps(_jsonable(x), default=str) + "\n" for x in lines), encoding="utf-8")


@dataclass(frozen=True)
class Goal:
    name: str
    goal: str
    figures: str
    passed: bool | None
    #: Other processes took CPU meanwhile: a miss is then INCONCLUSIVE rather than FAIL.
    noisy: bool = False

    @property
    def verdict(self) -> str:
        if self.passed is False and self.noisy:
            return "INCONCLUSIVE"
        return {True: "PASS", False: "FAIL", None: "N/A"}[self.passed]


def noisy(result: VisionBenchResult) -> bool:
    """True when other processes took a noticeable share of the CPU during either run."""
    return any(x is not None and x > NOISY_OTHER_CPU_PERCENT
               for x in (result.detector.other_cpu_percent, result.service.other_cpu_percent))


def goal_checks(result: VisionBenchResult) -> list[Goal]:
    ratio = result.fps_ratio
    lat = result.service.latency()
    shaky = noisy(result)
    return [
        Goal("service FPS vs bare detector", f"≥ {GOAL_FPS_RATIO:.2f}×",
             f"{result.service.fps:.2f} / {result.detector.fps:.2f} FPS = {ratio:.3f}×",
             ratio >= GOAL_FPS_RATIO if result.detector.fps else None, shaky),
        Goal("GET /v1/scene p99 while the pipeline runs", f"≤ {GOAL_SCENE_P99_MS:g} ms",
             f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms (n={lat['n']:.0f})"
             if lat else "no samples", lat["p99"] <= GOAL_SCENE_P99_MS if lat else None, shaky),
    ]


def _stage(s: Summary | None) -> str:
    return f"{fmt(s.p50)} / {fmt(s.p95)}" if s is not None else "–"


def render_markdown(result: VisionBenchResult) -> str:
    cfg = result.config
    out = ["## Vision (`watus bench vision`)", ""]
    what = "640×480: bus pan, zidane zoom, drawn frames" if cfg.video is None else "given video"
    out.append(f"Measured {result.started} on `{Path(result.video).name}` ({result.video_frames} frames, "
               f"{what}). Bare detector: every frame decoded first, then "
               f"`detect()` in a loop for {cfg.seconds:g} s. Service: `python -m vision` reading the same video "
               f"unpaced (`WATUS_VISION_SOURCE_FPS=0`), faces {'on' if cfg.faces else 'off'} (every "
               f"{cfg.face_every_n}th frame per person), {cfg.threads} ONNX Runtime threads, FPS from scene "
               f"sequence numbers over {cfg.seconds:g} s; then, with the pipeline running, `GET /v1/scene` at "
               f"{cfg.latency_hz:g} Hz for {cfg.latency_seconds:g} s from a raw keep-alive socket (the goal: the "
               f"service's answer time) and again through httpx (adds the client library's own Python time)."
               + (f" Raw data: `{result.jsonl_path}`." if result.jsonl_path else ""))
    model = str(result.detector_info.get("model", "")).replace(str(Path.home()), "~")
    out += ["", f"Detector: `{model}` ({result.detector_info.get('engine')}, "
            f"{result.detector_info.get('input_size')} px, providers {result.detector_info.get('providers', '–')}). "
            "On the robot the anchor is Ultralytics' published YOLO11n TensorRT FP16 inference: 2.55 ms on an "
            "AGX Orin.", ""]
    out += ["### Machine", "", _row("", ""), "|---|---|"]
    out += [_row(k, v) for k, v in result.machine.items()]
    d, s = result.detector, result.service
    out += ["", "### FPS and per-stage ms (p50 / p95)", "",
            _row("run", "FPS", *[x.removesuffix("_ms") for x in STAGES]), "|---|" + "---:|" * (len(STAGES) + 1),
            _row("bare detector", fmt(d.fps, 2), *[_stage(d.stages.get(x)) for x in STAGES]),
            _row("service pipeline", fmt(s.fps, 2), *[_stage(s.stages.get(x)) for x in STAGES])]
    hx = s.latency(httpx_client=True)
    if hx is not None:
        out += ["", f"`GET /v1/scene` through httpx: p50 {hx['p50']:.2f} ms, p95 {hx['p95']:.2f} ms, p99 "
                f"{hx['p99']:.2f} ms, max {hx['max']:.2f} ms (n={hx['n']:.0f})."]
    out += ["", f"Other processes on the machine took {fmt(d.other_cpu_percent, 0)}% of the CPU during the detector "
            f"run and {fmt(s.other_cpu_percent, 0)}% during the service run" +
            (" (**noisy**: figures taken while something else ran)." if noisy(result) else ".")]
    out += ["", f"Service: {s.scenes} scenes in {s.seconds:.1f} s; its own sliding-window FPS p50 "
            f"{fmt(s.reported_fps.p50 if s.reported_fps else None, 2)}; people with face attributes in "
            f"{s.faces_seen} person-scenes; {s.latency_fps:.2f} FPS during the latency burst; "
            f"{s.errors} failed requests."]
    out += ["", "### Goal check", "", _row("check", "goal", "figures", "result"), "|---|---|---|---|"]
    out += [_row(g.name, g.goal, g.figures, f"**{g.verdict}**") for g in goal_checks(result)]
    return "\n".join(out) + "\n"
