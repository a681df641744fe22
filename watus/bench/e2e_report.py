"""The report of `watus bench e2e`: per-mode statistics of the turn records, the goal check, the JSONL,
the Markdown section and the waterfall chart.

Everything here is a pure function of the turn records the agent wrote (plus the run's metadata), so
the arithmetic behind the goal check can be tested on hand-made records and re-run on an old JSONL.
Stages are measured from end of speech (t0, `speech_end`) on the machine-wide monotonic clock; the VAD
tail is the one stage before t0 (the silence the VAD waits for before it declares end of speech), and
comes from the audio service's own `end_silence` figure.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from watus.agent.turnlog import STAGES
from watus.bench.llm_report import GoalCheck, goal_verdict
from watus.bench.report import jsonable as _jsonable
from watus.bench.report import mean_max as _mm
from watus.bench.report import row as _row
from watus.bench.stats import Summary, fmt, ratio_noise, summarize
from watus.core.telemetry import TelemetrySummary

MODES = ("streaming", "sequential")
#: Goals of the issue: streaming e2e p50 against the sequential baseline's, and against the sum of the
#: stages that cannot overlap (VAD tail + ASR + scene + LLM to first sentence + TTS first chunk).
GOAL_VS_SEQUENTIAL = 0.5
GOAL_VS_CRITICAL_PATH = 1.2

STAGE_LABELS = {
    "asr_done": "ASR done (transcript)",
    "scene_fetched": "scene fetched",
    "llm_first_token": "LLM first token",
    "first_sentence": "first sentence complete",
    "tts_first_audio": "TTS first audio",
    "playback_start": "playback start (= e2e)",
    "playback_end": "playback end",
}
#: The stages that cannot overlap, in order: (key, label, start stage, end stage). The VAD tail is
#: `audio_ms.end_silence` (before t0); the others are differences of the record's `t_ns`.
CRITICAL_PARTS: tuple[tuple[str, str, str, str], ...] = (
    ("vad_tail", "VAD tail (silence before t0)", "", ""),
    ("asr", "ASR after end of speech", "speech_end", "asr_done"),
    ("scene", "scene fetch", "asr_done", "scene_fetched"),
    ("llm_first_sentence", "LLM to first sentence", "scene_fetched", "first_sentence"),
    ("tts_first_chunk", "TTS first chunk", "first_sentence", "tts_first_audio"),
)


@dataclass
class E2EConfig:
    """What `watus bench e2e` runs (the defaults are the command's)."""

    questions: tuple[str, ...] = ("What do you see?", "How many people are here?", "Hello Watus, how are you?",
                                  "What is your name?")
    #: Passes over the questions per mode; each pass starts a fresh agent and audio service (and an empty
    #: conversation), and passes alternate the modes' order.
    runs: int = 2
    warmup: int = 1  # untimed questions at the start of each pass
    modes: tuple[str, ...] = MODES
    #: Image or video the vision service watches; None: no vision service (the robot says it cannot see).
    vision_source: Path | None = None
    vision_fps: float = 2.0
    llm_url: str | None = None  # an LLM server to use instead of starting `python -m trt_server`
    lead_in_s: float = 8.0  # silence before the first question: the agent subscribes to audio events
    gap_s: float = 16.0  # silence after each question: time to think, start speaking, and be cut
    #: Seconds of each reply played before the benchmark stops the speaker (0: every reply plays to its end,
    #: and `gap_s` must then outlast the longest reply). e2e is measured before the cut.
    playback_s: float = 6.0
    #: The agent's reply limit in tokens; None: the agent's own setting (what the robot runs with).
    max_tokens: int | None = None
    startup_timeout_s: float = 180.0
    settle_timeout_s: float = 60.0  # wait for the last records after the microphone file has played


@dataclass
class ModeTelemetry:
    """The machine while one pass of one mode played its questions."""

    mode: str
    run: int
    summary: TelemetrySummary
    #: % of the machine's CPU used by processes other than the benchmark's own process tree.
    other_cpu_percent: float | None


@dataclass
class E2EResult:
    config: E2EConfig
    machine: dict[str, str]
    started: str
    #: Turn records as the agent wrote them, plus `mode`, `warmup` and `question` (the closest question).
    turns: list[dict[str, Any]] = field(default_factory=list)
    telemetry: list[ModeTelemetry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    llm_model: str | None = None  # as the LLM server lists it
    jsonl_path: Path | None = None
    chart_path: Path | None = None


# --- per-turn arithmetic -----------------------------------------------------------------------------------


def since_t0(record: dict[str, Any]) -> dict[str, float]:
    """Milliseconds from end of speech to each stage the record has (empty without `speech_end`)."""
    t = record.get("t_ns") or {}
    t0 = t.get("speech_end")
    if t0 is None:
        return {}
    return {stage: (t[stage] - t0) / 1e6 for stage in STAGES[1:] if t.get(stage) is not None}


def critical_parts(record: dict[str, Any]) -> dict[str, float] | None:
    """The stages that cannot overlap and their `sum`, in ms; None if the record lacks one of them."""
    t = record.get("t_ns") or {}
    tail = (record.get("audio_ms") or {}).get("end_silence")
    if tail is None:
        return None
    parts: dict[str, float] = {"vad_tail": float(tail)}
    for key, _label, start, end in CRITICAL_PARTS[1:]:
        if t.get(start) is None or t.get(end) is None:
            return None
        parts[key] = (t[end] - t[start]) / 1e6
    parts["sum"] = sum(parts.values())
    return parts


def timed_turns(turns: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """The mode's turns that count: not warm-up, and reached playback (an e2e figure)."""
    return [r for r in turns if r.get("mode") == mode and not r.get("warmup") and r.get("e2e_ms") is not None]


@dataclass(frozen=True)
class ModeStats:
    mode: str
    turns: int  # records of the mode, warm-up excluded
    timed: int  # of which have an e2e figure
    interrupted: int  # by anything but the benchmark's playback cut (a barge-in, a failure)
    cut: int  # replies the benchmark stopped after `playback_s`
    failed: int
    e2e: Summary | None
    #: Characters of the replies (the sequential baseline's cost grows with them; streaming's does not).
    reply_chars: Summary | None
    #: Per stage of `STAGE_LABELS`: ms after t0.
    stages: dict[str, Summary | None]
    #: Per key of `CRITICAL_PARTS`, plus `sum` and `e2e_minus_in_e2e_parts` (what playback start adds).
    parts: dict[str, Summary | None]


def mode_stats(turns: list[dict[str, Any]], mode: str) -> ModeStats:
    counted = [r for r in turns if r.get("mode") == mode and not r.get("warmup")]
    timed = timed_turns(turns, mode)
    offsets = [since_t0(r) for r in timed]
    stages = {s: summarize(o.get(s) for o in offsets) for s in STAGE_LABELS}
    per_turn = [(r, critical_parts(r)) for r in timed]
    keys = [k for k, *_ in CRITICAL_PARTS] + ["sum"]
    parts = {k: summarize(p[k] for _, p in per_turn if p is not None) for k in keys}
    parts["e2e_minus_in_e2e_parts"] = summarize(
        float(r["e2e_ms"]) - (p["sum"] - p["vad_tail"]) for r, p in per_turn if p is not None)
    return ModeStats(mode=mode, turns=len(counted), timed=len(timed),
                     interrupted=sum(bool(r.get("interrupted")) and not r.get("cut_by_bench") for r in counted),
                     cut=sum(bool(r.get("cut_by_bench")) for r in counted),
                     failed=sum(r.get("error") is not None for r in counted),
                     e2e=summarize(float(r["e2e_ms"]) for r in timed),
                     reply_chars=summarize(len(str(r.get("reply") or "")) for r in timed if r.get("reply")),
                     stages=stages, parts=parts)


# --- goal check --------------------------------------------------------------------------------------------


def goal_checks(stats: dict[str, ModeStats]) -> list[GoalCheck]:
    """Streaming e2e p50 ≤ 0.5 × sequential's, and ≤ 1.2 × the p50 of the per-turn non-overlapping sum."""
    checks: list[GoalCheck] = []
    streaming, sequential = stats.get("streaming"), stats.get("sequential")
    s_e2e = streaming.e2e if streaming is not None else None
    name, goal = "streaming vs sequential", f"streaming e2e p50 ≤ {GOAL_VS_SEQUENTIAL:g} × sequential e2e p50"
    q_e2e = sequential.e2e if sequential is not None else None
    if s_e2e is not None and q_e2e is not None and q_e2e.p50 > 0:
        ratio, noise = s_e2e.p50 / q_e2e.p50, ratio_noise(s_e2e, q_e2e)
        checks.append(GoalCheck(name, goal, f"{s_e2e.p50:,.0f} / {q_e2e.p50:,.0f} ms = {ratio:.3f}× "
                                f"(noise ±{noise:.3f} = 2 SE, n={s_e2e.n}/{q_e2e.n})",
                                goal_verdict(ratio, GOAL_VS_SEQUENTIAL, noise, higher_is_better=False,
                                             tolerate=False)))
    else:
        missing = [m for m, e in (("streaming", s_e2e), ("sequential", q_e2e)) if e is None]
        checks.append(GoalCheck(name, goal, "not measured: " + (", ".join(missing) or "no timed turns"), "N/A"))
    name = "streaming vs stages that cannot overlap"
    goal = (f"streaming e2e p50 ≤ {GOAL_VS_CRITICAL_PATH:g} × p50 of (VAD tail + ASR + scene + LLM to first "
            "sentence + TTS first chunk)")
    total = streaming.parts.get("sum") if streaming is not None else None
    if s_e2e is not None and total is not None and total.p50 > 0:
        ratio, noise = s_e2e.p50 / total.p50, ratio_noise(s_e2e, total)
        without_tail = streaming.parts.get("vad_tail") if streaming is not None else None
        extra = ""
        if without_tail is not None and total.p50 - without_tail.p50 > 0:
            extra = f"; without the VAD tail, which e2e does not contain: " \
                    f"{s_e2e.p50 / (total.p50 - without_tail.p50):.3f}×"
        checks.append(GoalCheck(name, goal, f"{s_e2e.p50:,.0f} / {total.p50:,.0f} ms = {ratio:.3f}× "
                                f"(noise ±{noise:.3f} = 2 SE, n={s_e2e.n}/{total.n}){extra}",
                                goal_verdict(ratio, GOAL_VS_CRITICAL_PATH, noise, higher_is_better=False,
                                             tolerate=False)))
    else:
        checks.append(GoalCheck(name, goal, "not measured: no streaming turn with every stage", "N/A"))
    return checks


# --- Markdown ----------------------------------------------------------------------------------------------



def _p(s: Summary | None, attr: str, digits: int = 0) -> str:
    return fmt(getattr(s, attr), digits) if s is not None else "–"



def _pair_header(first: str, modes: list[str]) -> list[str]:
    cells = [first] + [f"{m} {q}" for m in modes for q in ("p50", "p95")]
    return [_row(*cells), "|" + "---|" * len(cells)]


def render_markdown(result: E2EResult, chart_link: str | None = None) -> str:
    """The report section (without markers): setup, machine, turns, stages, critical path, goals, chart."""
    cfg = result.config
    modes = [m for m in cfg.modes if any(r.get("mode") == m for r in result.turns)] or list(cfg.modes)
    stats = {m: mode_stats(result.turns, m) for m in modes}
    vision = f"the vision service on `{cfg.vision_source.name}` at {cfg.vision_fps:g} fps" \
        if cfg.vision_source is not None else "no vision service (the robot says it cannot see)"
    replies = f"replies of at most {cfg.max_tokens} tokens" if cfg.max_tokens else "the agent's own reply limits"
    cut = (f"the benchmark stops each reply after {cfg.playback_s:g} s of playback, once the LLM has finished it "
           "(e2e is measured before), so the next question need not wait for a long reply to play"
           ) if cfg.playback_s > 0 else "every reply plays out"
    out = ["## End to end (`watus bench e2e`)", "",
           f"Measured {result.started}: {len(cfg.questions)} questions spoken by piper, {cfg.runs} pass(es) per "
           f"mode (each with a fresh agent and audio service and {cfg.warmup} untimed warm-up question(s); "
           "passes alternate the modes' order), played in real time as the audio service's microphone "
           f"({cfg.gap_s:g} s of silence after each question), with every process on 127.0.0.1: "
           f"the LLM server{' at ' + cfg.llm_url if cfg.llm_url else ''}"
           f"{f' (`{result.llm_model}`)' if result.llm_model else ''}, {vision}, the agent "
           f"(temperature 0, {replies}) and the audio service (null speaker paced in real time; {cut})."
           + (f" Raw data: `{result.jsonl_path}`." if result.jsonl_path else ""), "",
           "e2e = playback start − end of speech (t0, when the VAD declared it), from the agent's turn log. "
           "Streaming speaks each sentence as soon as it is complete; the sequential baseline waits for the "
           "whole reply, then synthesises all of it, then plays it (the original Watus plan).", ""]
    out += ["### Machine", "", _row("", ""), "|---|---|", *[_row(k, v) for k, v in result.machine.items()], ""]
    out += ["### Turns", "", _row("mode", "turns", "with e2e", "cut by the benchmark", "interrupted otherwise",
                                  "failed", "reply chars p50", "e2e p50 ms", "e2e p95 ms", "e2e max ms"),
            "|---|---|---|---|---|---|---|---|---|---|"]
    for m, s in stats.items():
        out.append(_row(m, str(s.turns), str(s.timed), str(s.cut), str(s.interrupted), str(s.failed),
                        _p(s.reply_chars, "p50"), _p(s.e2e, "p50"), _p(s.e2e, "p95"), _p(s.e2e, "max")))
    out += ["", "### Stages (ms after end of speech)", "", *_pair_header("stage", modes)]
    for stage, label in STAGE_LABELS.items():
        out.append(_row(label, *[_p(stats[m].stages.get(stage), q) for m in modes for q in ("p50", "p95")]))
    out += ["", "### Stages that cannot overlap (ms)", "", *_pair_header("stage", modes)]
    for key, label, *_ in CRITICAL_PARTS:
        out.append(_row(label, *[_p(stats[m].parts.get(key), q) for m in modes for q in ("p50", "p95")]))
    out.append(_row("**sum** (per turn)", *[_p(stats[m].parts.get("sum"), q) for m in modes
                                            for q in ("p50", "p95")]))
    out.append(_row("e2e", *[_p(stats[m].e2e, q) for m in modes for q in ("p50", "p95")]))
    out.append(_row("e2e − sum without VAD tail (TTS first audio → playback start)",
                    *[_p(stats[m].parts.get("e2e_minus_in_e2e_parts"), q) for m in modes for q in ("p50", "p95")]))
    out += ["", "The VAD tail lies before t0, so e2e does not contain it; the goal's sum does. In the sequential "
            "baseline \"first sentence\" is the whole reply and playback waits for the whole synthesis."]
    if result.telemetry:
        out += ["", "### Telemetry (while each mode's questions played)", "",
                _row("mode", "run", "source", "samples", "RAM used MB mean / max", "CPU % mean / max",
                     "other processes CPU %", "GPU % mean / max", "power W mean / max"),
                "|---|---|---|---|---|---|---|---|---|"]
        for t in result.telemetry:
            tel = t.summary
            out.append(_row(t.mode, str(t.run), tel.source, str(tel.samples), _mm(tel.ram_used_mb),
                            _mm(tel.cpu_percent), fmt(t.other_cpu_percent, 0), _mm(tel.gpu_percent),
                            _mm(tel.power_mw.get("total"), 1e-3, 1)))
        out += ["", "Other processes' CPU is the machine's busy time minus this benchmark's process tree; above "
                "10% the figures of that mode were measured on a busy machine and are noisy."]
    out += ["", "### Goal check", "", _row("check", "goal", "figures", "result"), "|---|---|---|---|"]
    out += [_row(g.name, g.goal, g.figures, f"**{g.verdict}**") for g in goal_checks(stats)]
    if chart_link:
        out += ["", "### Waterfall", "", f"![Stages of each turn from end of speech, per mode]({chart_link})"]
    if result.errors:
        out += ["", "Problems: " + "; ".join(result.errors)]
    return "\n".join(out) + "\n"


def chart_link(chart: Path, report: Path) -> str:
    """The chart's path relative to the report's folder, as a Markdown link wants it."""
    return Path(os.path.relpath(chart.resolve(), report.resolve().parent)).as_posix()


# --- JSONL -------------------------------------------------------------------------------------------------



def write_jsonl(path: Path, result: E2EResult) -> None:
    """A meta line, one line per turn (with its mode, stages from t0 and non-overlapping parts), then a
    summary line per mode, a telemetry line per pass of a mode, and the goal checks."""
    modes = list(result.config.modes)
    lines: list[dict[str, Any]] = [{"type": "meta", "started": result.started, "config": asdict(result.config),
                                    "machine": result.machine, "llm_model": result.llm_model,
                                    "errors": result.errors,
                                    "chart": result.chart_path}]
    for r in result.turns:
        lines.append({"type": "turn", **r, "since_t0_ms": since_t0(r), "critical_ms": critical_parts(r)})
    stats = {m: mode_stats(result.turns, m) for m in modes}
    for m, s in stats.items():
        lines.append({"type": "summary", "mode": m, "turns": s.turns, "timed": s.timed,
                      "interrupted": s.interrupted, "cut": s.cut, "failed": s.failed, "e2e_ms": s.e2e,
                      "reply_chars": s.reply_chars,
                      "stages_ms": s.stages, "critical_ms": s.parts})
    lines += [{"type": "telemetry", "mode": t.mode, "run": t.run, "other_cpu_percent": t.other_cpu_percent,
               **t.summary.as_dict()} for t in result.telemetry]
    lines += [{"type": "goal", **asdict(g)} for g in goal_checks(stats)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(_jsonable(line), ensure_ascii=False) + "\n")


# --- the waterfall chart -----------------------------------------------------------------------------------

#: Segment colours per stage (the segment ends at that stage and starts at the one before it).
_COLOURS = {
    "vad_tail": "#b0b0b0", "asr_done": "#4c72b0", "scene_fetched": "#8172b2", "llm_first_token": "#dd8452",
    "first_sentence": "#c44e52", "tts_first_audio": "#55a868", "playback_start": "#937860",
    "playback_end": "#ccb974",
}
_SEGMENT_LABELS = {
    "vad_tail": "VAD tail", "asr_done": "ASR", "scene_fetched": "scene", "llm_first_token": "LLM to first token",
    "first_sentence": "LLM first token → first sentence", "tts_first_audio": "TTS first chunk",
    "playback_start": "to playback start", "playback_end": "speaking",
}


def _turn_label(record: dict[str, Any], row: int, warmup: int) -> str:
    # Run.place in the pass, so a turn left out (no e2e) shows as a gap in the numbers.
    number = f"{record.get('run', 1)}.{int(record['index']) - warmup + 1}" if "index" in record else str(row + 1)
    return f"{number} {str(record.get('question') or record.get('transcript', ''))[:30]}"


def waterfall_chart(result: E2EResult, path: Path) -> Path:
    """A PNG: per mode a panel, per timed turn a row of horizontal bars, one per stage, from t0 (x = 0)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    modes = [m for m in result.config.modes if timed_turns(result.turns, m)] or list(result.config.modes)
    rows = {m: timed_turns(result.turns, m) for m in modes}
    heights = [max(1, len(rows[m])) for m in modes]
    fig = Figure(figsize=(11, 1.6 + 0.42 * sum(heights) + 0.5 * len(modes)), layout="constrained")
    axes = fig.subplots(len(modes), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    longest = max((float(r["e2e_ms"]) for m in modes for r in rows[m]), default=1000.0)
    tail_max = max(((r.get("audio_ms") or {}).get("end_silence", 0.0) for m in modes for r in rows[m]),
                   default=0.0)
    for ax, mode in zip(axes, modes, strict=True):
        turns = rows[mode]
        for y, rec in enumerate(turns):
            t = since_t0(rec)
            tail = (rec.get("audio_ms") or {}).get("end_silence")
            if tail is not None:
                ax.barh(y, tail, left=-tail, color=_COLOURS["vad_tail"], height=0.6)
            previous = 0.0
            for stage in STAGES[1:]:
                if stage not in t:
                    continue
                alpha = 0.35 if stage == "playback_end" else 1.0
                ax.barh(y, max(0.0, t[stage] - previous), left=previous, color=_COLOURS[stage], height=0.6,
                        alpha=alpha)
                previous = t[stage]
            ax.text(float(rec["e2e_ms"]) + longest * 0.01, y, f"{float(rec['e2e_ms']):,.0f} ms", va="center",
                    fontsize=8)
        labels = [_turn_label(r, i, result.config.warmup) for i, r in enumerate(turns)]
        ax.set_yticks(range(len(turns)), labels, fontsize=8)
        ax.set_ylim(len(turns) - 0.5 if turns else 0.5, -0.5)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{mode}: e2e p50 {_p(summarize(float(r['e2e_ms']) for r in turns), 'p50')} ms "
                     f"({len(turns)} turns)", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlim(-tail_max * 1.1 - 50, longest * 1.18 + 100)
    axes[-1].set_xlabel("ms after end of speech (t0); the speaking bar is cut at the right edge")
    handles = [Patch(color=c, label=_SEGMENT_LABELS[k], alpha=0.35 if k == "playback_end" else 1.0)
               for k, c in _COLOURS.items()]
    fig.suptitle("Watus spoken turns: stages from end of speech", fontsize=11)
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
