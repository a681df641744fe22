"""`watus bench load`'s settings, results and what is made of them: the goal checks (PASS/FAIL per goal),
the Markdown section and the JSON.

Pure data and arithmetic, no processes: the unit tests build results by hand and check the verdicts.
Correctness goals (valid streams, only 200/503, no vision errors) always fail on a miss; timing goals
become INCONCLUSIVE instead when other processes took a noticeable share of the CPU meanwhile, because
on a shared 2-core box a late `/health` then says more about the neighbours than about our server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from watus.bench.report import jsonable
from watus.bench.report import row as _row
from watus.bench.stats import Summary, fmt, percentile, summarize
from watus.bench.vision_report import NOISY_OTHER_CPU_PERCENT, Goal

#: Every `/health` answered within this while the burst runs (systemd and `watus up` poll it).
GOAL_HEALTH_MAX_MS = 100.0
#: A refused stream is told so "at once": its 503 arrives within this (p95) while the others generate.
GOAL_REJECT_P95_MS = 250.0
#: After the burst, a single request's TTFT p50 is within this factor of the one before it.
GOAL_RECOVERY_RATIO = 1.5
#: The scene clients get at least this share of the request rate they asked for.
GOAL_RATE_SHARE = 0.95
#: `GET /v1/scene` p95 under the load (the single-client bench asks p99 ≤ 5 ms at 100 Hz).
GOAL_SCENE_P95_MS = 20.0
#: The pipeline loses at most this share of its FPS to the scene load.
GOAL_FPS_DROP = 0.10

PACKAGES = ("xllamacpp", "onnxruntime", "httpx")

Outcome = Literal["admitted", "rejected", "failed"]


@dataclass(frozen=True)
class LoadConfig:
    """How `watus bench load` runs. `llm_env` adds WATUS_LLM_* settings (empty: the server's defaults)."""

    llm_streams: int = 32
    llm_max_tokens: int = 32
    #: Sequential single requests timed before and after the burst (TTFT recovery).
    single_runs: int = 5
    health_interval_s: float = 0.05
    llm_env: Mapping[str, str] = field(default_factory=dict)
    vision_rps: float = 200.0
    vision_clients: int = 8
    #: Length of the scene load, and of the FPS baseline before it.
    seconds: float = 10.0
    #: Pipeline running with a scene out before the baseline starts.
    vision_warmup_s: float = 3.0
    video: Path | None = None
    llm: bool = True
    vision: bool = True
    startup_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        if self.llm_streams < 1 or self.vision_clients < 1 or self.single_runs < 1:
            raise ValueError("streams, clients and single runs must be ≥ 1")
        if self.vision_rps <= 0 or self.seconds <= 0 or self.health_interval_s <= 0:
            raise ValueError("rate, seconds and the health interval must be > 0")


@dataclass
class StreamResult:
    """One request of the burst, as the client saw it."""

    outcome: Outcome
    status: int | None
    #: Request sent → last byte (admitted: the whole stream; rejected: the 503 body).
    total_ms: float
    ttft_ms: float | None = None
    chunks: int = 0
    completion_tokens: int | None = None
    retry_after: str | None = None
    #: Why it failed (a failed one), or what was wrong with a 503 (then it is failed too).
    error: str | None = None


@dataclass
class LLMLoadResult:
    streams: list[StreamResult]
    #: (seconds since the burst started, ms, status or None when there was no answer) per `/health` poll.
    health: list[tuple[float, float, int | None]]
    ttft_before_ms: list[float]
    ttft_after_ms: list[float]
    slots: int
    queue_size: int
    queue_timeout_s: float
    burst_s: float
    model: str = ""
    other_cpu_percent: float | None = None

    def of(self, outcome: Outcome) -> list[StreamResult]:
        return [s for s in self.streams if s.outcome == outcome]

    @property
    def capacity(self) -> int:
        return self.slots + self.queue_size

    def health_ms(self) -> Summary | None:
        return summarize(ms for _, ms, status in self.health if status is not None)

    def health_failures(self) -> int:
        return sum(1 for _, _, status in self.health if status != 200)


@dataclass
class VisionLoadResult:
    target_rps: float
    clients: int
    seconds: float
    latency_ms: list[float]
    #: What went wrong, one entry per failed request (`503`, `ConnectionError: ...`).
    errors: list[str]
    requests: int
    fps_before: float
    fps_during: float
    client_cpu_percent: float | None = None
    #: Other processes' CPU share during the load, and during the FPS baseline before it.
    other_cpu_percent: float | None = None
    other_cpu_before_percent: float | None = None

    @property
    def other_cpu_max(self) -> float | None:
        shares = [x for x in (self.other_cpu_percent, self.other_cpu_before_percent) if x is not None]
        return max(shares) if shares else None

    @property
    def achieved_rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def fps_drop(self) -> float:
        return 1.0 - self.fps_during / self.fps_before if self.fps_before > 0 else 0.0


@dataclass
class LoadResult:
    config: LoadConfig
    started: str
    machine: dict[str, str]
    llm: LLMLoadResult | None = None
    vision: VisionLoadResult | None = None
    #: A part that could not run at all (the service did not start): its message.
    llm_error: str | None = None
    vision_error: str | None = None


def _noisy(other: float | None) -> bool:
    return other is not None and other > NOISY_OTHER_CPU_PERCENT


def _p(s: Summary | None, attr: str, digits: int = 1) -> str:
    return fmt(getattr(s, attr) if s is not None else None, digits)


def immediate_rejections(r: LLMLoadResult) -> list[StreamResult]:
    """503s that came before the queue timeout: the server refused them because slots + queue were
    full (the others waited in the queue for the whole timeout)."""
    return [s for s in r.of("rejected") if s.total_ms < r.queue_timeout_s * 1e3]


def llm_goals(r: LLMLoadResult, streams: int) -> list[Goal]:
    """Only 200 + valid SSE or an immediate 503; `/health` answered fast; TTFT back after the burst."""
    shaky = _noisy(r.other_cpu_percent)
    admitted, rejected, failed = r.of("admitted"), r.of("rejected"), r.of("failed")
    reasons = sorted({s.error or "?" for s in failed})
    overflow = max(0, streams - r.capacity)
    now = immediate_rejections(r)
    late = len(rejected) - len(now)
    reject = summarize(s.total_ms for s in now)
    health = r.health_ms()
    hfail = r.health_failures()
    before, after = summarize(r.ttft_before_ms), summarize(r.ttft_after_ms)
    ratio = after.p50 / before.p50 if before is not None and after is not None and before.p50 > 0 else None
    return [
        Goal("streams: valid SSE ending in [DONE], or 503 + Retry-After + error body",
             "no other outcome",
             f"{len(admitted)} admitted, {len(rejected)} rejected, {len(failed)} failed"
             + (f" ({'; '.join(reasons)[:200]})" if reasons else ""),
             not failed and len(admitted) + len(rejected) == streams),
        Goal("refused only when slots + queue were full", f"≤ {overflow} immediate 503s ({streams} streams − "
             f"{r.slots} slots − {r.queue_size} queue)", f"{len(now)} immediate 503s", len(now) <= overflow),
        Goal("immediate 503s at once", f"p95 ≤ {GOAL_REJECT_P95_MS:g} ms",
             f"p50 {_p(reject, 'p50')} ms, p95 {_p(reject, 'p95')} ms, max {_p(reject, 'max')} ms "
             f"(n={reject.n if reject else 0})", reject.p95 <= GOAL_REJECT_P95_MS if reject else None, shaky),
        Goal("queued streams served before the queue timeout", f"0 × 503 after {r.queue_timeout_s:g} s in the queue",
             f"{late} timed out in the queue", late == 0, shaky),
        Goal("/health during the burst", f"every answer ≤ {GOAL_HEALTH_MAX_MS:g} ms, all 200",
             f"p50 {_p(health, 'p50')} ms, p95 {_p(health, 'p95')} ms, max {_p(health, 'max')} ms "
             f"(n={len(r.health)}, {hfail} failed)",
             None if not r.health else (hfail == 0 and health is not None and health.max <= GOAL_HEALTH_MAX_MS),
             shaky and hfail == 0),
        Goal("TTFT recovers after the burst", f"p50 after ≤ {GOAL_RECOVERY_RATIO:g}× before",
             f"{_p(after, 'p50')} / {_p(before, 'p50')} ms = {fmt(ratio, 2)}×",
             ratio <= GOAL_RECOVERY_RATIO if ratio is not None else None, shaky),
    ]


def vision_goals(r: VisionLoadResult) -> list[Goal]:
    """No failed scene request once a scene exists; the rate asked for; fast answers; little FPS lost."""
    shaky = _noisy(r.other_cpu_max)
    lat = summarize(r.latency_ms)
    kinds = sorted(set(r.errors))
    return [
        Goal("GET /v1/scene errors under load", "0 (a 503 after the first scene counts)",
             f"{len(r.errors)} of {r.requests}" + (f" ({', '.join(kinds)[:200]})" if kinds else ""),
             not r.errors and r.requests > 0),
        Goal("request rate achieved", f"≥ {GOAL_RATE_SHARE:.0%} of {r.target_rps:g}/s",
             f"{r.achieved_rps:.1f}/s from {r.clients} clients", r.achieved_rps >= GOAL_RATE_SHARE * r.target_rps,
             shaky),
        Goal("GET /v1/scene latency under load", f"p95 ≤ {GOAL_SCENE_P95_MS:g} ms",
             f"p50 {_p(lat, 'p50', 2)} ms, p95 {_p(lat, 'p95', 2)} ms, max {_p(lat, 'max', 2)} ms",
             lat.p95 <= GOAL_SCENE_P95_MS if lat else None, shaky),
        Goal("pipeline FPS drop under load", f"≤ {GOAL_FPS_DROP:.0%}",
             f"{r.fps_during:.2f} during vs {r.fps_before:.2f} FPS before: {r.fps_drop:.1%} lost",
             r.fps_drop <= GOAL_FPS_DROP if r.fps_before > 0 else None, shaky),
    ]


def goal_checks(result: LoadResult) -> list[Goal]:
    """Every goal of the run; a part that could not start is one FAIL."""
    goals: list[Goal] = []
    if result.llm_error is not None:
        goals.append(Goal("LLM load", "runs", result.llm_error[:200], False))
    elif result.llm is not None:
        goals += llm_goals(result.llm, result.config.llm_streams)
    if result.vision_error is not None:
        goals.append(Goal("vision load", "runs", result.vision_error[:200], False))
    elif result.vision is not None:
        goals += vision_goals(result.vision)
    return goals


def passed(goals: Sequence[Goal]) -> bool:
    """No goal failed (INCONCLUSIVE and N/A are not failures)."""
    return all(g.verdict != "FAIL" for g in goals)


def as_json(result: LoadResult) -> dict[str, Any]:
    """Everything measured, JSON-safe, with the summaries and the verdicts."""
    out: dict[str, Any] = {"bench": "load", "started": result.started, "machine": result.machine,
                           "config": asdict(result.config), "llm_error": result.llm_error,
                           "vision_error": result.vision_error}
    if result.llm is not None:
        r = result.llm
        out["llm"] = {**asdict(r), "summary": {
            "admitted": len(r.of("admitted")), "rejected": len(r.of("rejected")), "failed": len(r.of("failed")),
            "ttft_ms": summarize(s.ttft_ms for s in r.of("admitted")),
            "total_ms": summarize(s.total_ms for s in r.of("admitted")),
            "immediate_reject_ms": summarize(s.total_ms for s in immediate_rejections(r)),
            "health_ms": r.health_ms(),
            "ttft_before_ms": summarize(r.ttft_before_ms), "ttft_after_ms": summarize(r.ttft_after_ms)}}
    if result.vision is not None:
        v = result.vision
        out["vision"] = {**asdict(v), "summary": {"latency_ms": summarize(v.latency_ms),
                                                  "achieved_rps": v.achieved_rps, "fps_drop": v.fps_drop}}
    out["goals"] = [{**asdict(g), "verdict": g.verdict} for g in goal_checks(result)]
    return dict(jsonable(out))


def _llm_markdown(r: LLMLoadResult, cfg: LoadConfig) -> list[str]:
    admitted, rejected = r.of("admitted"), r.of("rejected")
    ttft, total = summarize(s.ttft_ms for s in admitted), summarize(s.total_ms for s in admitted)
    now = immediate_rejections(r)
    reject, health = summarize(s.total_ms for s in now), r.health_ms()
    late = summarize(s.total_ms for s in rejected if s.total_ms >= r.queue_timeout_s * 1e3)
    before, after = summarize(r.ttft_before_ms), summarize(r.ttft_after_ms)
    env = ", ".join(f"`{k}={v}`" for k, v in cfg.llm_env.items())
    return [
        "### LLM server under a burst", "",
        f"`python -m trt_server` ({r.model or 'the bundled model'}) with "
        + (f"{env} over its defaults" if env else "its default settings") + ": "
        f"{r.slots} slots, a queue of {r.queue_size}, {r.queue_timeout_s:g} s queue timeout. "
        f"{cfg.llm_streams} streaming chat requests (httpx, SSE; `max_tokens` {cfg.llm_max_tokens}, "
        f"`ignore_eos`) sent at once; every `data:` line is validated as a `chat.completion.chunk` and the "
        f"stream must end with `data: [DONE]`. `/health` polled every {cfg.health_interval_s * 1e3:g} ms from "
        f"a raw keep-alive socket in its own thread while the burst ran ({r.burst_s:.1f} s). TTFT of "
        f"{cfg.single_runs} single requests before and after the burst. Other processes took "
        f"{fmt(r.other_cpu_percent, 0)}% of the machine's CPU meanwhile"
        + (" (**noisy**)." if _noisy(r.other_cpu_percent) else "."), "",
        _row("figure", "n", "p50", "p95", "max"), "|---|---:|---:|---:|---:|",
        _row("admitted: TTFT ms (queue wait included)", str(len(admitted)), _p(ttft, "p50"), _p(ttft, "p95"),
             _p(ttft, "max")),
        _row("admitted: whole stream ms", str(len(admitted)), _p(total, "p50"), _p(total, "p95"), _p(total, "max")),
        _row("rejected at once (queue full): 503 ms", str(len(now)), _p(reject, "p50"), _p(reject, "p95"),
             _p(reject, "max")),
        _row("rejected after the queue timeout: 503 ms", str(late.n if late else 0), _p(late, "p50"),
             _p(late, "p95"), _p(late, "max")),
        _row("`/health` ms during the burst", str(len(r.health)), _p(health, "p50"), _p(health, "p95"),
             _p(health, "max")),
        _row("single request TTFT ms, before", str(len(r.ttft_before_ms)), _p(before, "p50"), _p(before, "p95"),
             _p(before, "max")),
        _row("single request TTFT ms, after", str(len(r.ttft_after_ms)), _p(after, "p50"), _p(after, "p95"),
             _p(after, "max")),
    ]


def _vision_markdown(v: VisionLoadResult, cfg: LoadConfig) -> list[str]:
    lat = summarize(v.latency_ms)
    return [
        "### Vision scene under load", "",
        f"`python -m vision` on the demo video, unpaced (`WATUS_VISION_SOURCE_FPS=0`: the pipeline takes "
        f"frames as fast as it can, so any CPU the requests take shows as lost FPS), faces on. After the "
        f"first scene and {cfg.vision_warmup_s:g} s, the pipeline's FPS (scene sequence numbers over time) "
        f"for {cfg.seconds:g} s alone, then `GET /v1/scene` from {v.clients} raw keep-alive clients (one "
        f"thread each, evenly staggered) at {v.target_rps:g} requests/s in all for {v.seconds:.1f} s. Once a "
        f"scene exists any non-200 answer is an error (the latest scene never goes away). The load "
        f"client took {fmt(v.client_cpu_percent, 0)}% of one core; other processes took "
        f"{fmt(v.other_cpu_before_percent, 0)}% of the machine during the baseline and "
        f"{fmt(v.other_cpu_percent, 0)}% during the load" + (" (**noisy**)." if _noisy(v.other_cpu_max) else "."),
        "",
        _row("requests", "errors", "achieved /s", "p50 ms", "p95 ms", "p99 ms", "max ms", "FPS before",
             "FPS during", "FPS drop"), "|" + "---:|" * 10,
        _row(str(v.requests), str(len(v.errors)), fmt(v.achieved_rps), _p(lat, "p50", 2), _p(lat, "p95", 2),
             fmt(_pct(v.latency_ms, 99), 2), _p(lat, "max", 2), fmt(v.fps_before, 2), fmt(v.fps_during, 2),
             f"{v.fps_drop:.1%}"),
    ]


def _pct(values: Sequence[float], q: float) -> float | None:
    return percentile(values, q) if values else None


def render_markdown(result: LoadResult, json_path: Path | None = None) -> str:
    """The `load` section of docs/benchmarks.md."""
    cfg = result.config
    out = ["## Load (`watus bench load`)", "",
           f"Measured {result.started}. The LLM server and the vision service run one after the other, each "
           "as its own process, never together. The machine is shared and small: the load client runs on "
           "the same cores as the service it loads."
           + (f" Raw figures: `{json_path}`." if json_path is not None else ""), "",
           "### Machine", "", _row("", ""), "|---|---|"]
    out += [_row(k, v) for k, v in result.machine.items()]
    out.append("")
    if result.llm is not None:
        out += [*_llm_markdown(result.llm, cfg), ""]
    if result.vision is not None:
        out += [*_vision_markdown(result.vision, cfg), ""]
    out += ["### Goal check", "", _row("check", "goal", "figures", "result"), "|---|---|---|---|"]
    out += [_row(g.name, g.goal, g.figures, f"**{g.verdict}**") for g in goal_checks(result)]
    return "\n".join(out) + "\n"
