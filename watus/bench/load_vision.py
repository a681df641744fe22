"""The vision half of `watus bench load`: many clients reading `GET /v1/scene` while the pipeline runs.

The agent, the dashboard and anything else on the robot read the latest scene whenever they like; the
pipeline must not care. The service reads the demo video unpaced, so the pipeline is always busy and
any CPU the requests take shows as lost FPS: first its FPS alone (a light 10 Hz poll), then the same
with `clients` threads, each with its own raw keep-alive socket, at `rps` requests per second in all.

What counts as an error: once the first scene is out, every answer must be a 200 with a scene (the
board never empties again, so a 503 then is a bug, not a warm-up). Before the first scene a 503 is the
documented "no scene yet" and is waited out.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from watus.bench.load_report import LoadConfig, VisionLoadResult
from watus.bench.vision_poll import RawHttpClient, seq_of
from watus.bench.vision_report import VisionBenchConfig
from watus.bench.vision_run import OtherCpu, vision_process

log = logging.getLogger(__name__)

#: Poll rate while the pipeline's FPS is measured alone: enough to see the sequence advance, ~no load.
BASELINE_HZ = 10.0
FIRST_SCENE_TIMEOUT_S = 60.0


@dataclass
class ClientLog:
    """What one load client saw: latencies of good answers, what went wrong, (time, seq) of scenes."""

    latency_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seqs: list[tuple[float, int]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latency_ms) + len(self.errors)


def fetch_once(client: RawHttpClient, into: ClientLog) -> None:
    """One `GET /v1/scene`, recorded as a latency and a seq or as an error."""
    start = time.perf_counter()
    try:
        status, body = client.get("/v1/scene")
    except (OSError, ValueError, StopIteration, IndexError) as e:
        into.errors.append(type(e).__name__)
        return
    end = time.perf_counter()
    seq = seq_of(body) if status == 200 else None
    if seq is None:
        into.errors.append(str(status) if status != 200 else "200 without a scene")
        return
    into.latency_ms.append((end - start) * 1e3)
    into.seqs.append((end, seq))


def paced(port: int, start_at: float, end_at: float, interval_s: float, into: ClientLog) -> None:
    """Fetch at `start_at`, then every `interval_s` until `end_at`; a late request is caught up at once,
    so a slow answer costs latency, not requests."""
    client = RawHttpClient("127.0.0.1", port, timeout=10.0)
    next_at = start_at
    try:
        while (now := time.perf_counter()) < end_at:
            if now < next_at:
                time.sleep(next_at - now)
            next_at += interval_s
            fetch_once(client, into)
    finally:
        client.close()


def fps_of(seqs: list[tuple[float, int]]) -> float:
    """Scenes per second from (time, seq) observations: the sequence's advance over the time it took."""
    ordered = sorted(seqs)
    if len(ordered) < 2 or ordered[-1][0] <= ordered[0][0]:
        return 0.0
    return (ordered[-1][1] - ordered[0][1]) / (ordered[-1][0] - ordered[0][0])


def wait_first_scene(port: int, timeout_s: float = FIRST_SCENE_TIMEOUT_S) -> None:
    """Until `GET /v1/scene` answers 200 (a 503 "no scene yet" before is expected)."""
    client = RawHttpClient("127.0.0.1", port)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if client.get("/v1/scene")[0] == 200:
                    return
            except (OSError, ValueError, StopIteration, IndexError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no scene {timeout_s:.0f} s after the vision service became healthy")
            time.sleep(0.1)
    finally:
        client.close()


def load_clients(port: int, rps: float, clients: int, seconds: float) -> tuple[list[ClientLog], float]:
    """`clients` threads at `rps` in all for `seconds`, staggered evenly; returns their logs and the window."""
    interval = clients / rps
    logs = [ClientLog() for _ in range(clients)]
    t0 = time.perf_counter() + 0.2
    end = t0 + seconds
    threads = [threading.Thread(target=paced, args=(port, t0 + k / rps, end, interval, logs[k]),
                                name=f"scene-client-{k}", daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60.0)
    return logs, max(time.perf_counter(), end) - t0


def run_vision_load(cfg: LoadConfig, out_dir: Path) -> VisionLoadResult:
    """Start `python -m vision` on the demo video, measure FPS alone, then under the scene load."""
    from vision.samples import write_demo_video

    out_dir.mkdir(parents=True, exist_ok=True)
    video = cfg.video or write_demo_video(out_dir / "bench-load.avi", frames_per_part=30)
    vcfg = VisionBenchConfig(startup_timeout_s=cfg.startup_timeout_s)
    log_path = out_dir / f"load-vision-{int(time.time())}.log"
    with vision_process(video, vcfg, log_path) as url:
        port = int(url.rsplit(":", 1)[1])
        wait_first_scene(port)
        time.sleep(cfg.vision_warmup_s)
        before = OtherCpu()
        before.start()
        alone, _ = load_clients(port, BASELINE_HZ, 1, cfg.seconds)
        before.stop()
        fps_before = fps_of(alone[0].seqs)
        log.info("vision FPS alone %.2f; %d clients at %g rps for %g s", fps_before, cfg.vision_clients,
                 cfg.vision_rps, cfg.seconds)
        me = psutil.Process()
        cpu0 = sum(me.cpu_times()[:2])
        other = OtherCpu()
        other.start()
        logs, window = load_clients(port, cfg.vision_rps, cfg.vision_clients, cfg.seconds)
        other.stop()
        client_cpu = (sum(me.cpu_times()[:2]) - cpu0) / window * 100.0
    return VisionLoadResult(
        target_rps=cfg.vision_rps, clients=cfg.vision_clients, seconds=window,
        latency_ms=[ms for x in logs for ms in x.latency_ms], errors=[e for x in logs for e in x.errors],
        requests=sum(x.requests for x in logs), fps_before=fps_before,
        fps_during=fps_of([s for x in logs for s in x.seqs]), client_cpu_percent=client_cpu,
        other_cpu_percent=other.percent, other_cpu_before_percent=before.percent)
