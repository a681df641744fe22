"""The two runs of `watus bench vision` on the same video frames, one after the other so they never share
the CPU: the bare detector in this process, then the whole service as its own process; and the whole
benchmark (`run_vision_bench`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil

from watus.bench import machine_info, procs
from watus.bench.procs import free_port as _free_port
from watus.bench.procs import own_cpu_seconds
from watus.bench.stats import summarize
from watus.bench.vision_poll import RawHttpClient, burst, poll
from watus.bench.vision_report import (
    PACKAGES,
    STAGES,
    DetectorRun,
    ServiceRun,
    VisionBenchConfig,
    VisionBenchResult,
    write_jsonl,
)

log = logging.getLogger(__name__)

#: Called with a phase name and a progress line.
ProgressFn = Callable[[str, str], None]


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
        return own_cpu_seconds()

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
           "WATUS_VISION_FACE_EVERY_N": str(cfg.face_every_n),
           "WATUS_VISION_API_KEY": ""}  # the bench's own loopback service: its bare clients send no key
    if cfg.model is not None:
        env["WATUS_VISION_DETECTOR_MODEL"] = str(cfg.model)
    url = f"http://127.0.0.1:{port}"
    with procs.service("vision", env, url, log_path, cfg.startup_timeout_s):
        yield url


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
        poll(fetch, cfg.warmup_s, 2.0, lambda *_: None)  # a 503 before the first scene is no failure
        progress("service", f"measuring FPS for {cfg.seconds:.0f} s")
        other = OtherCpu()
        other.start()
        errors = poll(fetch, cfg.seconds, cfg.poll_hz, keep)
        other.stop()
        progress("service", f"timing GET /v1/scene at {cfg.latency_hz:.0f} Hz for {cfg.latency_seconds:.0f} s "
                 "(raw socket, then httpx)")
        raw = RawHttpClient("127.0.0.1", int(url.rsplit(":", 1)[1]))
        try:
            latency, burst_fps, failed = burst(lambda: raw.get("/v1/scene"), cfg)
        finally:
            raw.close()
        httpx_latency, _, failed_httpx = burst(fetch, cfg)
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
