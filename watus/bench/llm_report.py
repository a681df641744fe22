"""The report of `watus bench llm`: goal checks, the Markdown section and the JSONL of raw runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from watus.bench.llm_targets import TargetKind
from watus.bench.llm_types import BenchResult, TargetResult
from watus.bench.report import cell as _p
from watus.bench.report import jsonable as _jsonable
from watus.bench.report import mean_max as _mm
from watus.bench.report import row as _row
from watus.bench.stats import Summary, difference_noise, fmt, ratio_noise

#: Goals of the LLM server (see the issue): decode vs in-process, vs llama.cpp's server, added TTFT.
GOAL_DECODE_VS_INPROCESS = 0.95
GOAL_DECODE_VS_BUILTIN = 1.0
GOAL_TTFT_ADDED_MS = 15.0


@dataclass(frozen=True)
class GoalCheck:
    name: str
    goal: str
    figures: str
    #: PASS, FAIL, INCONCLUSIVE (short of the goal by less than the noise of a noisy measurement), or
    #: N/A (a target the check needs is missing or failed).
    verdict: str

    @property
    def passed(self) -> bool | None:
        return {"PASS": True, "FAIL": False}.get(self.verdict)


#: Noise (relative, 2 SE) up to which "within measurement noise" may count as meeting a goal.
MAX_TOLERATED_NOISE = 0.05


def goal_verdict(value: float, goal: float, noise: float, *, higher_is_better: bool, tolerate: bool) -> str:
    """PASS if the goal is met; within noise of it: PASS where the goal allows noise and the noise is
    small, else INCONCLUSIVE; beyond the noise: FAIL."""
    short = goal - value if higher_is_better else value - goal
    if short <= 0:
        return "PASS"
    if short > noise:
        return "FAIL"
    return "PASS" if tolerate and noise <= MAX_TOLERATED_NOISE * abs(goal or 1.0) else "INCONCLUSIVE"


def _find(result: BenchResult, kind: TargetKind, spec: str | None = None) -> TargetResult | None:
    for t in result.targets:
        if (t.spec == spec if spec else t.kind == kind.value) and t.error is None and t.runs:
            return t
    return None


def _pair(ours: TargetResult | None, ref: TargetResult | None, metric: str) -> tuple[Summary, Summary] | None:
    if ours is None or ref is None:
        return None
    a, b = ours.stats()[metric], ref.stats()[metric]
    return (a, b) if a is not None and b is not None and b.p50 else None


def goal_checks(result: BenchResult) -> list[GoalCheck]:
    """Our server against the in-process engine and llama.cpp's own server, with the figures."""
    ours_spec = result.config.ours or "self:"
    ours = _find(result, TargetKind.self_server, result.config.ours)
    inproc = _find(result, TargetKind.inprocess)
    builtin = _find(result, TargetKind.llamacpp_server)
    checks: list[GoalCheck] = []

    def not_measured(name: str, goal: str, ref_label: str, ref: TargetResult | None) -> GoalCheck:
        absent = [label for label, t in ((f"our server ({ours_spec})", ours), (ref_label, ref)) if t is None]
        return GoalCheck(name, goal, "not measured: " + (", ".join(absent) or "no timed values"), "N/A")

    name, goal = "decode vs in-process", f"≥ {GOAL_DECODE_VS_INPROCESS:.2f}× in-process decode tok/s (p50)"
    if pair := _pair(ours, inproc, "decode_tps"):
        a, b = pair
        ratio, noise = a.p50 / b.p50, ratio_noise(a, b)
        checks.append(GoalCheck(name, goal, f"{a.p50:.1f} / {b.p50:.1f} tok/s = {ratio:.3f}× "
                                f"(noise ±{noise:.3f} = 2 SE, n={a.n}/{b.n})",
                                goal_verdict(ratio, GOAL_DECODE_VS_INPROCESS, noise, higher_is_better=True,
                                         tolerate=False)))
    else:
        checks.append(not_measured(name, goal, "inprocess:", inproc))
    name, goal = "decode vs llama.cpp server", "≥ 1.0× llama.cpp server decode tok/s (p50), within noise"
    if pair := _pair(ours, builtin, "decode_tps"):
        a, b = pair
        ratio, noise = a.p50 / b.p50, ratio_noise(a, b)
        checks.append(GoalCheck(name, goal, f"{a.p50:.1f} / {b.p50:.1f} tok/s = {ratio:.3f}× "
                                f"(noise ±{noise:.3f} = 2 SE, n={a.n}/{b.n})",
                                goal_verdict(ratio, GOAL_DECODE_VS_BUILTIN, noise, higher_is_better=True,
                                         tolerate=True)))
    else:
        checks.append(not_measured(name, goal, "llamacpp-server:", builtin))
    name, goal = "TTFT added", f"≤ {GOAL_TTFT_ADDED_MS:.0f} ms TTFT (p50) added over in-process"
    if pair := _pair(ours, inproc, "ttft_ms"):
        a, b = pair
        added, noise = a.p50 - b.p50, difference_noise(a, b)
        checks.append(GoalCheck(name, goal, f"{a.p50:.1f} − {b.p50:.1f} ms = {added:+.1f} ms "
                                f"(noise ±{noise:.1f} ms = 2 SE)",
                                goal_verdict(added, GOAL_TTFT_ADDED_MS, noise, higher_is_better=False,
                                         tolerate=False)))
    else:
        checks.append(not_measured(name, goal, "inprocess:", inproc))
    return checks





def _targets_table(result: BenchResult) -> list[str]:
    lines = [_row("target", "model", "prompt tok", "output tok", "TTFT p50 ms", "TTFT p95 ms",
                  "prefill tok/s p50", "decode tok/s p50", "decode tok/s p95", "server decode tok/s p50",
                  "wall p50 ms", "failed runs"),
             "|" + "---|" * 12]
    for t in result.targets:
        if t.error is not None:
            lines.append(_row(f"`{t.spec}`", "–", *["–"] * 9, f"target failed: {t.error[:160]}"))
            continue
        s = t.stats()
        out = _p(s["completion_tokens"], "p50", 0) + ("" if t.ignore_eos else " (no ignore_eos)")
        model = Path(t.model).name if t.model and t.model.endswith(".gguf") else t.model or "–"
        lines.append(_row(f"`{t.spec}`", model, _p(s["prompt_tokens"], "p50", 0), out,
                          _p(s["ttft_ms"], "p50"), _p(s["ttft_ms"], "p95"), _p(s["prefill_tps"], "p50", 0),
                          _p(s["decode_tps"], "p50"), _p(s["decode_tps"], "p95"),
                          _p(s["server_decode_tps"], "p50"), _p(s["wall_ms"], "p50", 0), str(t.errors)))
    return lines


def _concurrency_table(result: BenchResult) -> list[str]:
    lines = [_row("target", "streams", "aggregate tok/s p50", "per-stream decode tok/s p50",
                  "per-stream TTFT p50 ms", "failed streams"), "|" + "---|" * 6]
    for t in result.targets:
        for level in t.concurrency:
            s = level.summary()
            lines.append(_row(f"`{t.spec}`", str(level.concurrency), _p(s["aggregate_tps"], "p50"),
                              _p(s["stream_decode_tps"], "p50"), _p(s["ttft_ms"], "p50"), str(level.errors)))
    return lines if len(lines) > 2 else []


def _features_table(result: BenchResult) -> list[str]:
    lines = [_row("target", "variant", "output tok/request p50", "decode tok/s p50", "× plain", "TTFT p50 ms",
                  "wall p50 ms", "failed runs"), "|" + "---|" * 8]
    for t in result.targets:
        base = t.features[0].summary()["decode_tps"] if t.features else None
        for v in t.features:
            s = v.summary()
            decode = s["decode_tps"]
            ratio = f"{decode.p50 / base.p50:.2f}×" if decode and base and base.p50 else "–"
            lines.append(_row(f"`{t.spec}`", v.name, _p(s["completion_tokens"], "p50", 0), _p(decode, "p50"), ratio,
                              _p(s["ttft_ms"], "p50"), _p(s["wall_ms"], "p50", 0), str(v.errors)))
    return lines if len(lines) > 2 else []


def _telemetry_table(result: BenchResult) -> list[str]:
    lines = [_row("target", "source", "samples", "RAM used MB mean / max", "swap MB mean / max",
                  "CPU % mean / max", "other processes CPU %", "GPU % mean / max", "power W mean / max",
                  "hottest sensor °C max"),
             "|" + "---|" * 10]
    for t in result.targets:
        tel = t.telemetry
        if tel is None:
            continue
        hottest = max(tel.temps_c.items(), key=lambda kv: kv[1].max, default=None)
        lines.append(_row(f"`{t.spec}`", tel.source, str(tel.samples), _mm(tel.ram_used_mb),
                          _mm(tel.swap_used_mb), _mm(tel.cpu_percent), fmt(t.other_cpu_percent, 0),
                          _mm(tel.gpu_percent),
                          _mm(tel.power_mw.get("total"), 1e-3, 1),
                          f"{hottest[1].max:.1f} ({hottest[0]})" if hottest else "–"))
    return lines if len(lines) > 2 else []


def render_markdown(result: BenchResult) -> str:
    """The report section (without markers): machine, settings, targets, concurrency, telemetry, goals."""
    cfg = result.config
    out = ["## LLM serving (`watus bench llm`)", ""]
    out.append(f"Measured {result.started}: prompt {cfg.prompt_tokens} tokens, output {cfg.max_tokens} "
               f"tokens (`ignore_eos` where the target takes it), temperature 0, {cfg.warmup} warm-up + "
               f"{cfg.runs} timed runs per target, llama.cpp {cfg.threads} threads, {cfg.slots} server "
               f"slots, {'chat' if cfg.chat else 'completions'} endpoint."
               + (f" Raw data: `{result.jsonl_path}`." if result.jsonl_path else ""))
    out += ["", "TTFT: request sent → first token received by the client. Prefill tok/s: prompt tokens / "
            "TTFT. Decode tok/s: (output tokens − 1) / (first → last token). Every prompt starts with a "
            "fresh number, so no target reuses a cached prefix. Server decode tok/s: the target's own "
            "figure (Ollama's eval_count / eval_duration).", ""]
    out += ["### Machine", "", _row("", ""), "|---|---|"]
    out += [_row(k, v) for k, v in result.machine.items()]
    out += ["", "### Targets", "", *_targets_table(result)]
    if conc := _concurrency_table(result):
        out += ["", f"### Concurrency ({cfg.concurrency_rounds} rounds per level, streams start together; "
                f"{cfg.slots} slots on llama.cpp's server and ours)",
                "", *conc]
    if feats := _features_table(result):
        out += ["", f"### What sampling features cost ({cfg.feature_runs} runs per variant, interleaved; decode "
                "tok/s counts the tokens of every choice)", "", *feats]
    if tel := _telemetry_table(result):
        out += ["", "### Telemetry (during the timed runs)", "", *tel]
    out += ["", "### Goal check", "", _row("check", "goal", "figures", "result"), "|---|---|---|---|"]
    for g in goal_checks(result):
        out.append(_row(g.name, g.goal, g.figures, f"**{g.verdict}**"))
    return "\n".join(out) + "\n"



def write_jsonl(path: Path, result: BenchResult) -> None:
    """One line per run (and concurrency stream), then a summary line per target, level and goal."""
    config = asdict(result.config)
    if config.get("api_key"):
        config["api_key"] = "***"  # results get shared; keys must not travel with them
    lines: list[dict[str, Any]] = [{"type": "meta", "started": result.started, "config": config,
                                    "machine": result.machine}]
    for t in result.targets:
        for r in t.runs:
            lines.append({"type": "run", **asdict(r)})
        for level in t.concurrency:
            lines += [{"type": "run", **asdict(r)} for r in level.streams]
        for v in t.features:
            lines += [{"type": "run", **asdict(r)} for r in v.runs]
    for t in result.targets:
        lines.append({"type": "summary", "target": t.spec, "kind": t.kind, "model": t.model, "error": t.error,
                      "ignore_eos": t.ignore_eos, "prompt_words": t.prompt_words,
                      "calibrated_prompt_tokens": t.calibrated_prompt_tokens, "failed_runs": t.errors,
                      "other_cpu_percent": t.other_cpu_percent,
                      "metrics": t.stats(),
                      "telemetry": t.telemetry.as_dict() if t.telemetry is not None else None})
        for level in t.concurrency:
            lines.append({"type": "concurrency", "target": t.spec, "concurrency": level.concurrency,
                          "aggregate_tps_rounds": level.aggregate_tps, "failed_streams": level.errors,
                          **level.summary()})
        for v in t.features:
            lines.append({"type": "feature", "target": t.spec, "variant": v.name, "failed_runs": v.errors,
                          **v.summary()})
    lines += [{"type": "goal", **asdict(g)} for g in goal_checks(result)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(_jsonable(line), ensure_ascii=False) + "\n")
