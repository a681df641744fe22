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
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer

from watus.bench import machine_info, procs, update_markdown_section
from watus.bench.procs import free_port as _free_port
from watus.bench.report import jsonable as _jsonable
from watus.bench.report import row as _row
from watus.bench.stats import Summary, fmt, percentile, summarize

log = logging.getLogger(__name__)

GOAL_FPS_RATIO = 0.9
GOAL_SCENE_P99_MS = 5.0
STAGES = ("preprocess_ms", "inference_ms", "postprocess_ms", "tracking_ms", "faces_ms", "total_ms")
PACKAGES = ("onnxruntime", "opencv-python-headless", "numpy")

#: Called with a phase name and a progress line.
ProgressFn = Callable[[str, str], None]


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


class OtherCpu:
    """CPU share (% of the machine) that processes other than this one and its children took meanwhile.

    Our service threads run at a raised niceness, so anything else on the box takes CPU from them first:
    a figure taken while another job ran is marked as noisy instead of passing for the service's cost.
    """

    def __init__(self) -> None:
        self.percent: float | None = None
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _ours() -> float:
        me = psutil.Process()
        total = 0.0
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) +
                     getattr(t, "softirq", 0.0))

    def start(self) -> None:
        self._start = (time.monotonic(), self._busy(), self._ours())

    def stop(self) -> float | None:
        if self._start is None:
            return None
        t0, busy0, ours0 = self._start
        wall = time.monotonic() - t0
        if wall > 0:
            other = (self._busy() - busy0) - (self._ours() - ours0)
            self.percent = max(0.0, other / wall / (psutil.cpu_count() or 1) * 100.0)
        return self.percent


#: Other processes' CPU share above which a run is called noisy in the report.
NOISY_OTHER_CPU_PERCENT = 10.0


def _frames(video: Path) -> list[Any]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    frames = []
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(image)
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"no frames in {video}")
    return frames


def bench_detector(frames: list[Any], cfg: VisionBenchConfig,
                   progress: ProgressFn) -> tuple[DetectorRun, dict[str, Any]]:
    """The bare detector over the frames, looping until `seconds` have passed (at least one pass)."""
    from vision.detector import select_detector
    from vision.settings import VisionSettings

    overrides: dict[str, Any] = {"threads": cfg.threads, "faces": cfg.faces}
    if cfg.model is not None:
        overrides["detector_model"] = cfg.model
    detector = select_detector(VisionSettings(**overrides))
    detector.load()
    try:
        for image in frames[:3]:
            detector.detect(image)
        samples: list[dict[str, float]] = []
        other = OtherCpu()
        other.start()
        started = time.perf_counter()
        i = 0
        while i < len(frames) or time.perf_counter() - started < cfg.seconds:
            t0 = time.perf_counter()
            _, t = detector.detect(frames[i % len(frames)])
            samples.append({"preprocess_ms": t.preprocess_ms, "inference_ms": t.inference_ms,
                            "postprocess_ms": t.postprocess_ms, "total_ms": (time.perf_counter() - t0) * 1e3})
            i += 1
            if i % 25 == 0:
                progress("detector", f"{i} frames, {i / (time.perf_counter() - started):.1f} FPS")
        elapsed = time.perf_counter() - started
        other.stop()
        info = detector.info()
    finally:
        detector.close()
        gc.collect()  # the service must not share the machine with this session's memory either
    stages = {s: summarize(x.get(s) for x in samples) for s in STAGES}
    return DetectorRun(frames=len(samples), seconds=elapsed, stages=stages, samples=samples,
                       other_cpu_percent=other.percent), info



@contextlib.contextmanager
def vision_process(video: Path, cfg: VisionBenchConfig, log_path: Path) -> Iterator[str]:
    """`python -m vision` on a free port with the video as an unpaced, looping camera."""
    port = _free_port()
    env = {**os.environ, "WATUS_VISION_PORT": str(port), "WATUS_VISION_SOURCE": str(video),
           "WATUS_VISION_SOURCE_KIND": "file", "WATUS_VISION_LOOP": "true", "WATUS_VISION_SOURCE_FPS": "0",
           "WATUS_VISION_THREADS": str(cfg.threads), "WATUS_VISION_FACES": str(cfg.faces).lower(),
           "WATUS_VISION_FACE_EVERY_N": str(cfg.face_every_n)}
    if cfg.model is not None:
        env["WATUS_VISION_DETECTOR_MODEL"] = str(cfg.model)
    url = f"http://127.0.0.1:{port}"
    with procs.service("vision", env, url, log_path, cfg.startup_timeout_s):
        yield url


class RawHttpClient:
    """A bare keep-alive HTTP/1.1 GET over one socket: times the server, not a client library.

    httpx spends ~0.7 ms of Python per request on its own, which on a 2-core box also competes with
    the service for the CPU; the latency goal is about the service's answer, so the burst uses this.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def get(self, path: str) -> tuple[int, bytes]:
        if self._sock is None:
            self._sock = self._connect()
        try:
            self._sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            buf = b""
            while (end := buf.find(b"\r\n\r\n")) < 0:
                buf += self._recv()
            head = buf[:end].decode("latin-1").split("\r\n")
            length = next(int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:"))
            body = buf[end + 4:]
            while len(body) < length:
                body += self._recv()
            return int(head[0].split()[1]), body[:length]
        except (OSError, ValueError, StopIteration, IndexError):
            self.close()
            raise

    def _recv(self) -> bytes:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        return chunk

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


#: GET /v1/scene once: (status, body).
FetchFn = Callable[[], tuple[int, bytes]]


def _poll(fetch: FetchFn, seconds: float, hz: float, on_scene: Callable[[float, float, bytes], None]) -> int:
    """Fetch the scene at `hz` for `seconds`; calls on_scene(t, latency_ms, body). Returns failed requests."""
    errors = 0
    interval = 1.0 / hz
    end = time.perf_counter() + seconds
    next_at = time.perf_counter()
    while (now := time.perf_counter()) < end:
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        t0 = time.perf_counter()
        try:
            status, body = fetch()
        except (httpx.HTTPError, OSError, ValueError, StopIteration, IndexError):
            errors += 1
            continue
        t1 = time.perf_counter()
        if status != 200:
            errors += 1
            continue
        on_scene(t1, (t1 - t0) * 1e3, body)
    return errors


def _seq_of(body: bytes) -> int | None:
    # The seq sits near the start of the body: no need to parse 3 kB per poll at 100 Hz.
    head = body[:80].decode("ascii", "replace")
    seq = head.split('"seq":', 1)[1].split(",", 1)[0] if '"seq":' in head else ""
    return int(seq) if seq.isdigit() else None


def _burst(fetch: FetchFn, cfg: VisionBenchConfig) -> tuple[list[float], float, int]:
    """Latencies of a polling burst, the service FPS meanwhile, and failed requests."""
    latency: list[float] = []
    seqs: list[tuple[float, int]] = []

    def timed(t: float, ms: float, body: bytes) -> None:
        latency.append(ms)
        seq = _seq_of(body)
        if seq is not None:
            seqs.append((t, seq))

    gc.collect()
    gc.disable()  # a collection in this client would be charged to the server
    try:
        errors = _poll(fetch, cfg.latency_seconds, cfg.latency_hz, timed)
    finally:
        gc.enable()
    fps = (seqs[-1][1] - seqs[0][1]) / (seqs[-1][0] - seqs[0][0]) if len(seqs) > 1 else 0.0
    return latency, fps, errors


def bench_service(video: Path, cfg: VisionBenchConfig, log_path: Path, progress: ProgressFn) -> ServiceRun:
    scenes: dict[int, dict[str, Any]] = {}
    marks: list[tuple[float, int]] = []

    def keep(t: float, _ms: float, body: bytes) -> None:
        scene = json.loads(body)
        marks.append((t, int(scene["seq"])))
        scenes.setdefault(int(scene["seq"]), scene)

    with vision_process(video, cfg, log_path) as url, httpx.Client(base_url=url, timeout=10) as client:

        def fetch() -> tuple[int, bytes]:
            r = client.get("/v1/scene")
            return r.status_code, r.content

        progress("service", f"warming up {cfg.warmup_s:.0f} s")
        _poll(fetch, cfg.warmup_s, 2.0, lambda *_: None)  # a 503 before the first scene is no failure
        progress("service", f"measuring FPS for {cfg.seconds:.0f} s")
        other = OtherCpu()
        other.start()
        errors = _poll(fetch, cfg.seconds, cfg.poll_hz, keep)
        other.stop()
        progress("service", f"timing GET /v1/scene at {cfg.latency_hz:.0f} Hz for {cfg.latency_seconds:.0f} s "
                 "(raw socket, then httpx)")
        raw = RawHttpClient("127.0.0.1", int(url.rsplit(":", 1)[1]))
        try:
            latency, burst_fps, failed = _burst(lambda: raw.get("/v1/scene"), cfg)
        finally:
            raw.close()
        httpx_latency, _, failed_httpx = _burst(fetch, cfg)
        errors += failed + failed_httpx
    if len(marks) < 2 or marks[-1][0] <= marks[0][0]:
        raise RuntimeError("the service produced no scenes while measured")
    (t_first, s_first), (t_last, s_last) = marks[0], marks[-1]
    samples = [scenes[k] for k in sorted(scenes) if s_first < k]
    stages = {s: summarize(x["timings"].get(s) for x in samples) for s in STAGES}
    return ServiceRun(scenes=s_last - s_first, seconds=t_last - t_first, stages=stages,
                      reported_fps=summarize(x["fps"] for x in samples),
                      faces_seen=sum(1 for x in samples for p in x["people"] if p.get("age")),
                      samples=[{"seq": x["seq"], "frame_id": x["frame_id"], "timings": x["timings"], "fps": x["fps"],
                                "objects": len(x["objects"]), "people": len(x["people"])} for x in samples],
                      latency_ms=latency, httpx_latency_ms=httpx_latency, latency_fps=burst_fps, errors=errors,
                      other_cpu_percent=other.percent)


def run_vision_bench(cfg: VisionBenchConfig, out_dir: Path, progress: ProgressFn | None = None) -> VisionBenchResult:
    """Bare detector, then the service, on the same video; writes the JSONL and returns the figures."""
    from vision.samples import write_demo_video

    def say(phase: str, line: str) -> None:
        log.info("%s: %s", phase, line)
        if progress is not None:
            progress(phase, line)

    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    video = cfg.video or write_demo_video(out_dir / "bench-vision.avi", frames_per_part=cfg.frames_per_part)
    frames = _frames(video)
    video_frames = len(frames)
    say("detector", f"{video_frames} frames of {video} in memory")
    detector, info = bench_detector(frames, cfg, say)
    del frames
    gc.collect()
    stamp = started.replace(":", "").replace("-", "")
    service = bench_service(video, cfg, out_dir / f"vision-{stamp}.log", say)
    result = VisionBenchResult(config=cfg, started=started, machine=machine_info(PACKAGES), video=str(video),
                               video_frames=video_frames,
                               detector=detector, service=service, detector_info=info)
    result.jsonl_path = out_dir / f"vision-{stamp}.jsonl"
    write_jsonl(result.jsonl_path, result)
    return result



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
    update_markdown_section(report, "vision", render_markdown(result))
    console.print(render_markdown(result))
    console.print(f"raw runs: {result.jsonl_path}\nreport: {report}")
