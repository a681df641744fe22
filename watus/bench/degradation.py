"""`watus bench degradation`: does decode speed survive unloading and reloading the model?

On a Jetson Thor, Ollama decoded 37 tok/s on a fresh start and 5 tok/s after a few model unload/reload
cycles (and phi4 fell from 19.8 to 10.6 tok/s); only a reboot brought the speed back. The robot reloads
its LLM whenever `watus-llm` restarts (a crash, a watchdog kill, a new engine), so the same must be
ruled out for our stack: load the model, measure decode tok/s over a few runs, unload and load it again
N times, measure again, and flag a drop of more than 20 % (the threshold of the Thor notes).

A reload is what the robot does: `self:[KEY=VALUE,...]` stops and starts `python -m trt_server` (any
engine, TensorRT-LLM on the robot), `inprocess:<gguf|default>` frees and reloads llama.cpp inside this
process (a leak in the engine itself shows here), `llamacpp-server:` does the same behind llama.cpp's
own HTTP server. Remote servers cannot be reloaded from here and are refused. Each cycle also records
telemetry (tegrastats on the robot) and the swap watch, loaded and after the unload: memory that is
not given back shows as falling available memory, and swapping explains a slow cycle.

Results: a JSONL of every run and cycle, and the `degradation` section of `docs/benchmarks.md`.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from watus.bench.llm import build_prompt, calibrate_prompt, parse_target
from watus.bench.llm_targets import Driver, TargetKind, TargetSpec, open_target
from watus.bench.llm_types import BenchConfig, BenchError, RunResult
from watus.bench.stats import Summary, fmt, ratio_noise, summarize
from watus.core.memwatch import SwapWatch
from watus.core.telemetry import TelemetrySampler, TelemetrySummary

log = logging.getLogger(__name__)

#: A drop of decode tok/s beyond this share is flagged (the Thor notes' "> 20 % drop").
DEFAULT_THRESHOLD = 0.20
RELOADABLE = (TargetKind.self_server, TargetKind.inprocess, TargetKind.llamacpp_server)

#: Called between steps: (what is happening, steps done, steps in all).
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DegradationConfig:
    """How the benchmark runs. `cycles` counts the reloads after the first load."""

    cycles: int = 5
    runs: int = 5
    warmup: int = 1
    prompt_tokens: int = 128
    max_tokens: int = 128
    threshold: float = DEFAULT_THRESHOLD
    #: Measure after every reload (a trend), or only after the first load and the last reload.
    measure_every: bool = True
    threads: int | None = None
    context_length: int = 2048
    startup_timeout_s: float = 600.0
    telemetry_interval_s: float = 0.5

    def __post_init__(self) -> None:
        if self.cycles < 1 or self.runs < 1 or self.warmup < 0:
            raise ValueError("cycles and runs must be ≥ 1, warmup ≥ 0")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold is a share of the first speed within (0, 1), got {self.threshold}")

    def bench_config(self) -> BenchConfig:
        # One stream, one slot: the question is the engine's speed, not the server's concurrency.
        cfg = BenchConfig(runs=self.runs, warmup=self.warmup, prompt_tokens=self.prompt_tokens,
                          max_tokens=self.max_tokens, concurrency=(1,), concurrency_rounds=1, slots=1,
                          context_length=self.context_length, startup_timeout_s=self.startup_timeout_s,
                          telemetry_interval_s=self.telemetry_interval_s)
        return cfg if self.threads is None else replace(cfg, threads=self.threads)


@dataclass(frozen=True)
class DropCheck:
    """Decode tok/s after the reloads against the first load (p50 of each cycle's runs)."""

    before_p50: float
    after_p50: float
    #: 1 − after/before: 0.25 is 25 % slower; negative when faster.
    drop: float
    #: Relative uncertainty of the ratio (2 standard errors of the medians).
    noise: float
    threshold: float
    n_before: int
    n_after: int

    @property
    def degraded(self) -> bool:
        """The flag: decode tok/s fell by more than the threshold."""
        return self.drop > self.threshold

    @property
    def verdict(self) -> str:
        """OK; DEGRADED (beyond the threshold by more than the noise); INCONCLUSIVE (flagged, but the runs
        scatter so much that the drop may be noise: a busy machine, too few runs)."""
        if not self.degraded:
            return "OK"
        return "DEGRADED" if self.drop - self.threshold > self.noise else "INCONCLUSIVE"

    def describe(self) -> str:
        return (f"decode {self.before_p50:.1f} → {self.after_p50:.1f} tok/s p50 ({-self.drop * 100:+.1f} %, noise "
                f"±{self.noise * 100:.1f} %, n={self.n_before}/{self.n_after}; flagged beyond "
                f"−{self.threshold * 100:.0f} %)")


def detect_drop(before: Sequence[float | None], after: Sequence[float | None],
                threshold: float = DEFAULT_THRESHOLD) -> DropCheck | None:
    """Compare two sets of decode tok/s; None when either has no values or the first is 0."""
    a, b = summarize(before), summarize(after)
    if a is None or b is None or a.p50 <= 0:
        return None
    return DropCheck(before_p50=a.p50, after_p50=b.p50, drop=1.0 - b.p50 / a.p50, noise=ratio_noise(b, a),
                     threshold=threshold, n_before=a.n, n_after=b.n)


@dataclass
class Cycle:
    """One load → (measure) → unload. Index 0 is the first load; 1..N are the reloads."""

    index: int
    measured: bool
    load_s: float | None = None
    unload_s: float | None = None
    runs: list[RunResult] = field(default_factory=list)
    telemetry: TelemetrySummary | None = None
    memory_loaded: dict[str, Any] | None = None
    memory_unloaded: dict[str, Any] | None = None
    error: str | None = None

    def decode_tps(self) -> list[float]:
        return [r.decode_tps for r in self.runs if r.error is None and r.decode_tps is not None]

    def summary(self, metric: str) -> Summary | None:
        return summarize(getattr(r, metric) for r in self.runs if r.error is None)


@dataclass
class DegradationResult:
    target: str
    config: DegradationConfig
    machine: dict[str, str]
    started: str
    model: str | None = None
    prompt_words: int | None = None
    prompt_tokens: int | None = None
    cycles: list[Cycle] = field(default_factory=list)
    check: DropCheck | None = None
    jsonl_path: Path | None = None

    def first_and_last(self) -> tuple[Cycle | None, Cycle | None]:
        measured = [c for c in self.cycles if c.measured and c.error is None and c.decode_tps()]
        first = measured[0] if measured and measured[0].index == 0 else None
        last = measured[-1] if measured and measured[-1].index > 0 else None
        return first, last


def _timed(driver: Driver, prompt: str, max_tokens: int, label: str, index: int) -> RunResult:
    start = time.perf_counter()
    try:
        return driver.generate(prompt, max_tokens).result(label, "run", index)
    except (BenchError, httpx.HTTPError, ValueError) as e:
        log.warning("%s run #%d failed: %s", label, index, e)
        return RunResult(target=label, phase="run", index=index, error=f"{type(e).__name__}: {e}", start_s=start,
                         end_s=time.perf_counter())


def _cycle(spec: TargetSpec, cfg: DegradationConfig, bcfg: BenchConfig, log_dir: Path, index: int, measure: bool,
           result: DegradationResult, nonces: Iterator[int], watch: SwapWatch, tick: Callable[[str], None]) -> Cycle:
    cycle = Cycle(index=index, measured=measure)
    label = "first load" if index == 0 else f"reload {index}"
    started = time.perf_counter()
    try:
        with open_target(spec, bcfg, log_dir) as driver:
            cycle.load_s = time.perf_counter() - started
            result.model = result.model or driver.model
            if result.prompt_words is None:  # once, so every cycle times the same prompt length
                result.prompt_words, result.prompt_tokens = calibrate_prompt(
                    lambda p: driver.generate(p, 1).prompt_tokens, cfg.prompt_tokens, nonces)
            words = result.prompt_words
            for _ in range(cfg.warmup):
                driver.generate(build_prompt(words, next(nonces)), cfg.max_tokens)
            if measure:
                with TelemetrySampler(cfg.telemetry_interval_s) as sampler:
                    for i in range(cfg.runs):
                        cycle.runs.append(_timed(driver, build_prompt(words, next(nonces)), cfg.max_tokens,
                                                 spec.spec, i))
                        tick(f"{label}: run {i + 1}/{cfg.runs}")
                cycle.telemetry = sampler.summary()
            cycle.memory_loaded = watch.check()
            unloading = time.perf_counter()
        cycle.unload_s = time.perf_counter() - unloading
    except (BenchError, httpx.HTTPError, OSError, ValueError) as e:
        log.error("%s of %s failed: %s", label, spec.spec, e)
        cycle.error = f"{type(e).__name__}: {e}"
    gc.collect()
    cycle.memory_unloaded = watch.check()
    tick(f"{label}: done")
    return cycle


def run_degradation_bench(target: str = "self:", cfg: DegradationConfig | None = None,
                          out_dir: Path = Path("bench-results"), report: Path | None = Path("docs/benchmarks.md"),
                          progress: ProgressFn | None = None) -> DegradationResult:
    """Load, measure, reload `cfg.cycles` times, measure again; write the JSONL and the report section.

    Raises ValueError for a target that cannot be reloaded from here. A failed cycle is recorded, not
    raised; when the first load fails, nothing more runs.
    """
    from watus.bench import machine_info, update_markdown_section

    cfg = cfg or DegradationConfig()
    spec = parse_target(target)
    if spec.kind not in RELOADABLE:
        kinds = ", ".join(f"{k.value}:" for k in RELOADABLE)
        raise ValueError(f"{target!r} cannot be unloaded from here: use one of {kinds}")
    started = datetime.now(timezone.utc)
    result = DegradationResult(target=spec.spec, config=cfg, started=started.isoformat(timespec="seconds"),
                               machine=machine_info(("xllamacpp", "tensorrt_llm")))
    out_dir.mkdir(parents=True, exist_ok=True)
    bcfg = cfg.bench_config()
    nonces = itertools.count(1)
    watch = SwapWatch(name="bench degradation")
    measured = [i == 0 or i == cfg.cycles or cfg.measure_every for i in range(cfg.cycles + 1)]
    total = sum(1 + (cfg.runs if m else 0) for m in measured)
    done = 0

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(what, done, total)

    for index, measure in enumerate(measured):
        cycle = _cycle(spec, cfg, bcfg, out_dir, index, measure, result, nonces, watch, tick)
        result.cycles.append(cycle)
        if index == 0 and (cycle.error is not None or not cycle.decode_tps()):
            log.error("the first load gave no decode speed: nothing to compare against")
            break
    first, last = result.first_and_last()
    if first is not None and last is not None:
        result.check = detect_drop(first.decode_tps(), last.decode_tps(), cfg.threshold)
    if result.check is not None and result.check.degraded:
        log.warning("decode speed %s after %d reloads: %s", result.check.verdict, last.index if last else 0,
                    result.check.describe())
    result.jsonl_path = out_dir / f"degradation-{started.strftime('%Y%m%d-%H%M%S')}.jsonl"
    write_jsonl(result.jsonl_path, result)
    if report is not None:
        update_markdown_section(report, "degradation", render_markdown(result))
    return result


# -- report ----------------------------------------------------------------------------------------------


def _cycle_record(c: Cycle) -> dict[str, Any]:
    decode = c.summary("decode_tps")
    ttft = c.summary("ttft_ms")
    return {"type": "cycle", "index": c.index, "measured": c.measured, "load_s": c.load_s, "unload_s": c.unload_s,
            "error": c.error, "decode_tps": decode.as_dict() if decode else None,
            "ttft_ms": ttft.as_dict() if ttft else None,
            "telemetry": c.telemetry.as_dict() if c.telemetry else None,
            "memory_loaded": c.memory_loaded, "memory_unloaded": c.memory_unloaded}


def write_jsonl(path: Path, result: DegradationResult) -> None:
    """One line for the run's settings, one per timed run, one per cycle, one for the verdict."""
    lines: list[dict[str, Any]] = [{"type": "config", "target": result.target, "model": result.model,
                                    "started": result.started, "prompt_words": result.prompt_words,
                                    "prompt_tokens": result.prompt_tokens, **asdict(result.config),
                                    "machine": result.machine}]
    for c in result.cycles:
        lines.extend({"type": "run", "cycle": c.index, **asdict(r)} for r in c.runs)
        lines.append(_cycle_record(c))
    check = result.check
    lines.append({"type": "verdict", "verdict": check.verdict if check else "N/A",
                  **(asdict(check) if check else {})})
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def _mb(value: dict[str, Any] | None, key: str) -> str:
    return fmt(value.get(key) if value else None, 0)


def render_markdown(result: DegradationResult) -> str:
    cfg = result.config
    first, _ = result.first_and_last()
    base = first.summary("decode_tps") if first else None
    lines = [
        "## LLM unload/reload degradation (`watus bench degradation`)",
        "",
        f"Target `{result.target}` (model {result.model or '?'}), {cfg.cycles} reload(s) after the first load, "
        f"{cfg.runs} timed run(s) per measured cycle after {cfg.warmup} warm-up, prompt "
        f"{result.prompt_tokens or cfg.prompt_tokens} tokens, output {cfg.max_tokens} tokens; {result.started}.",
        "",
        "| cycle | load s | decode tok/s p50 | vs first | TTFT ms p50 | RAM used MB (max) | swap used MB (max) "
        "| CPU % (mean) | GPU % (mean) | available MB loaded / unloaded |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result.cycles:
        name = "first load" if c.index == 0 else f"reload {c.index}"
        if c.error is not None:
            lines.append(f"| {name} | failed: {c.error[:80].replace('|', '/')} |  |  |  |  |  |  |  |  |")
            continue
        decode, ttft, tel = c.summary("decode_tps"), c.summary("ttft_ms"), c.telemetry
        ratio = f"{decode.p50 / base.p50:.2f}×" if decode and base and base.p50 else "–"
        ram = fmt(tel.ram_used_mb.max if tel and tel.ram_used_mb else None, 0)
        swap = fmt(tel.swap_used_mb.max if tel and tel.swap_used_mb else None, 0)
        cpu = fmt(tel.cpu_percent.mean if tel and tel.cpu_percent else None, 0)
        gpu = fmt(tel.gpu_percent.mean if tel and tel.gpu_percent else None, 0)
        lines.append(f"| {name} | {fmt(c.load_s, 1)} | {fmt(decode.p50 if decode else None)} | {ratio} | "
                     f"{fmt(ttft.p50 if ttft else None)} | {ram} | {swap} | {cpu} | {gpu} | "
                     f"{_mb(c.memory_loaded, 'mem_available_mb')} / {_mb(c.memory_unloaded, 'mem_available_mb')} |")
    lines.append("")
    if result.check is not None:
        lines.append(f"**{result.check.verdict}**: {result.check.describe()}.")
    else:
        lines.append("**N/A**: no decode speed to compare (see the failed cycles).")
    machine = ", ".join(f"{k}: {v}" for k, v in result.machine.items())
    lines += ["", f"Machine: {machine}.", "",
              f"Raw runs: `{result.jsonl_path}`." if result.jsonl_path else ""]
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------------------


def degradation(
    target: Annotated[str, typer.Option("--target", "-t", help="self:[WATUS_LLM_KEY=VALUE,...] (restarts python -m "
                                        "trt_server), inprocess:<gguf|default> or llamacpp-server:<gguf|default> "
                                        "(reload llama.cpp in this process).")] = "self:",
    cycles: Annotated[int, typer.Option(min=1, help="Unload/reload cycles after the first load.")] = 5,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per measured cycle.")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs after each load.")] = 1,
    prompt_tokens: Annotated[int, typer.Option(min=1, help="Prompt length in the model's tokens.")] = 128,
    max_tokens: Annotated[int, typer.Option(min=2, help="Output length (forced with ignore_eos).")] = 128,
    threshold: Annotated[float, typer.Option(min=0.01, max=0.99, help="Flag a decode tok/s drop beyond this "
                                             "share of the first load's.")] = DEFAULT_THRESHOLD,
    measure_every: Annotated[bool, typer.Option("--measure-every/--measure-ends", help="Measure after every "
                                                "reload, or only after the first load and the last reload.")] = True,
    threads: Annotated[int | None, typer.Option(min=1, help="llama.cpp threads (default: cores, at most 8).")] = None,
    context_length: Annotated[int, typer.Option(min=128, help="Context per sequence.")] = 2048,
    out_dir: Annotated[Path, typer.Option(help="Folder for the JSONL and server logs.")] = Path("bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose degradation section is rewritten.")] = Path(
        "docs/benchmarks.md"),
) -> None:
    """Load the LLM, measure decode tok/s, unload/reload it N times, measure again; flag a > 20 % drop.

    Exit status: 0 OK, 3 DEGRADED, 4 INCONCLUSIVE (a drop beyond the threshold, but within the noise of
    the runs), 1 nothing to compare (a load failed).
    """
    from rich.console import Console

    console = Console()
    try:
        cfg = DegradationConfig(cycles=cycles, runs=runs, warmup=warmup, prompt_tokens=prompt_tokens,
                                max_tokens=max_tokens, threshold=threshold, measure_every=measure_every,
                                threads=threads, context_length=context_length)
        parse_target(target)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None

    def on_progress(what: str, done: int, total: int) -> None:
        console.print(f"[dim]{done}/{total}[/dim] {what}", highlight=False)

    try:
        result = run_degradation_bench(target, cfg, out_dir, report, on_progress)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--target") from None
    console.print(render_markdown(result), markup=False, highlight=False)
    console.print(f"report: {report}")
    if result.check is None:
        raise typer.Exit(code=1)
    if result.check.verdict == "DEGRADED":
        console.print("[red]decode speed degraded after reloads[/red] (the Thor notes' workaround: reboot; "
                      "see docs/jetson.md)")
        raise typer.Exit(code=3)
    if result.check.verdict == "INCONCLUSIVE":
        console.print("[yellow]slower after reloads, but within the noise of the runs[/yellow]: run again with "
                      "more --runs on an otherwise idle machine")
        raise typer.Exit(code=4)
