"""The writers of `watus bench e2e`: the Markdown section, the JSONL of every turn, and the JSON summary.

All of them are pure functions of an `E2EResult` (the turn records plus the run's metadata), so an old
JSONL's turns give the same report again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from watus.bench.e2e_goals import goal_checks
from watus.bench.e2e_report import (
    CRITICAL_PARTS,
    STAGE_LABELS,
    E2EResult,
    ModeStats,
    all_stats,
    critical_parts,
    since_speech_end,
    since_t0,
)
from watus.bench.e2e_turns import CUT_OFF_WORD_SHARE
from watus.bench.report import jsonable as _jsonable
from watus.bench.report import mean_max as _mm
from watus.bench.report import row as _row
from watus.bench.stats import Summary, fmt


def _p(s: Summary | None, attr: str, digits: int = 0) -> str:
    return fmt(getattr(s, attr), digits) if s is not None else "–"


def _pair_header(first: str, modes: list[str]) -> list[str]:
    cells = [first] + [f"{m} {q}" for m in modes for q in ("p50", "p95")]
    return [_row(*cells), "|" + "---|" * len(cells)]


def _modes(result: E2EResult) -> list[str]:
    cfg = result.config
    return [m for m in cfg.modes if any(r.get("mode") == m for r in result.turns)] or list(cfg.modes)


def expected_paused(result: E2EResult) -> int:
    """Paused questions each mode was asked in the whole run."""
    return result.config.runs * sum(q.paused for q in result.config.spoken())


def _rate(hits: int, misses: int) -> str:
    return f"{hits / (hits + misses):.0%}" if hits + misses else "–"


def _intro(result: E2EResult) -> list[str]:
    cfg = result.config
    vision = f"the vision service on `{cfg.vision_source.name}` at {cfg.vision_fps:g} fps" \
        if cfg.vision_source is not None else "no vision service (the robot says it cannot see)"
    replies = f"replies of at most {cfg.max_tokens} tokens" if cfg.max_tokens else "the agent's own reply limits"
    cut = (f"the benchmark stops each reply after {cfg.playback_s:g} s of playback, once the LLM has finished it "
           "(latency is measured before), so the next question need not wait for a long reply to play"
           ) if cfg.playback_s > 0 else "every reply plays out"
    spoken = cfg.spoken()
    wavs = sum(q.wav is not None for q in spoken)
    voice = "a new rendition in each run" if cfg.voice_variation else "the same audio in every run"
    incremental = {None: "its own setting", True: "on", False: "off"}[cfg.asr_incremental]
    return [
        f"Measured {result.started}: {len(spoken)} questions ({sum(q.paused for q in spoken)} with a mid-sentence "
        f"pause{f', {wavs} recorded' if wavs else ''}; piper's questions are {voice}), {cfg.runs} pass(es) "
        "per mode (each with a fresh agent "
        f"and audio service and {cfg.warmup} untimed warm-up question(s); passes alternate the modes' order), "
        "played in real time as "
        f"the audio service's microphone ({cfg.gap_s:g} s of silence after each question), with every process "
        f"on 127.0.0.1: the LLM server{' at ' + cfg.llm_url if cfg.llm_url else ''}"
        f"{f' (`{result.llm_model}`)' if result.llm_model else ''}, {vision}, the agent "
        f"(temperature 0, {replies}) and the audio service (null speaker paced in real time; {cut}; transcribing "
        f"long utterances while they are spoken: {incremental})."
        + (f" Raw data: `{result.jsonl_path}`." if result.jsonl_path else "")
        + (f" Summary: `{result.json_path}`." if result.json_path else ""), "",
        "Modes: **sequential** waits for the whole reply, then synthesises all of it, then plays it (the original "
        "Watus plan); **streaming** speaks each sentence as soon as it is complete; **preemptive** is streaming "
        "with the reply started from the speculative transcript at the person's first pause, its audio held "
        "until the final transcript confirms it (`WATUS_AGENT_PREEMPTIVE=true`), and the end of the turn decided "
        "by the Smart Turn model (`WATUS_AUDIO_TURN_END=model`), which waits 1000 ms of silence where the model is "
        "unsure (`WATUS_AUDIO_TURN_UNSURE_SILENCE_MS=1000`: the held reply is prepared during it)"
        + ("; **preemptive-tail** is the same held reply with the turn ended by the silence tail alone, as in "
           "streaming (`WATUS_AUDIO_TURN_END=silence`)" if "preemptive-tail" in cfg.modes else "")
        + ". Questions "
        "with a pause are two pieces of piper's "
        "voice joined by exactly that much silence (`‹500 ms›`).", "",
        "Definitions, all from the agent's turn log on the machine-wide monotonic clock:", "",
        "- **e2e** = playback start − t0, the VAD's end-of-speech decision;",
        "- **perceived** = playback start − the capture time of the last speech frame (the true end of speech): "
        "what a person waits, the VAD tail included;",
        "- **hit rate** = preemptive hits / (hits + misses): a hit is a reply confirmed by the final transcript "
        "(record `preemptive: hit`), a miss one thrown away (the record's `preemptive_misses`) because speech "
        "resumed or the final words differed;",
        "- a **cut-off turn** ended while the person was still speaking the question: the question's stretch of "
        "the microphone stream held more than one transcribed utterance (every turn but the last ended at a "
        "pause), or its only transcript has fewer than "
        f"{CUT_OFF_WORD_SHARE:.0%} of the question's words or is a strict prefix of them. Cut-off turns are "
        "left out of the latency figures.", ""]


def _turn_tables(stats: dict[str, ModeStats]) -> list[str]:
    out = ["### Turns", "", _row("mode", "turns", "with e2e", "cut by the benchmark", "interrupted otherwise",
                                 "failed", "reply chars p50", "e2e p50 ms", "e2e p95 ms", "e2e max ms",
                                 "last ASR pass p50 / p95 ms", "settled while spoken"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, s in stats.items():
        settled = (f"{s.settled_s.n} turns, p50 {s.settled_s.p50:.1f} s" if s.settled_s else "–")
        out.append(_row(m, str(s.turns), str(s.timed), str(s.cut), str(s.interrupted), str(s.failed),
                        _p(s.reply_chars, "p50"), _p(s.e2e, "p50"), _p(s.e2e, "p95"), _p(s.e2e, "max"),
                        f"{_p(s.asr, 'p50')} / {_p(s.asr, 'p95')}", settled))
    out += ["", "### Perceived latency, preemption and cut-offs", "",
            _row("mode", "timed turns", "e2e p50 ms", "e2e p95 ms", "perceived p50 ms", "perceived p95 ms",
                 "cut-off turns", "questions cut off", "paused questions cut off", "preemptive hits / misses",
                 "hit rate", "hit rate, paused questions", "not preempted", "hits started before t0 p50 ms",
                 "turn ends"),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, s in stats.items():
        ends = ", ".join(f"{k} {v}" for k, v in s.turn_ends.items()) or "–"
        out.append(_row(m, str(s.timed), _p(s.e2e, "p50"), _p(s.e2e, "p95"), _p(s.perceived, "p50"),
                        _p(s.perceived, "p95"), str(s.cut_off_turns), f"{s.cut_off_questions} of {s.questions}",
                        f"{s.paused_cut_off} of {s.paused_questions}", f"{s.hits} / {s.misses}",
                        _rate(s.hits, s.misses), _rate(s.paused_hits, s.paused_misses),
                        str(s.not_preempted) if m.startswith("preemptive") else "–", _p(s.lead, "p50"), ends))
    out += ["", "Turn ends: how the audio service ended each utterance (`silence`: the VAD's silence tail; "
            "`incomplete`: the model asked to wait longer; `complete`: the model ended it at the first pause). "
            "Not preempted: voice turns of the preemptive mode for which no preemptive reply was started. "
            "Started before t0: t0 − when the speculative transcript a hit started from was ready; negative: it "
            "came after the VAD's end of speech (the speculative ASR outlasted the silence tail), so the reply "
            "started no earlier than in streaming."]
    return out


def _question_table(result: E2EResult, modes: list[str]) -> list[str]:
    """Per question and mode: perceived ms of each pass, with cut-offs and preemption marked."""
    labels: dict[int, str] = {}
    cells: dict[tuple[int, str], list[str]] = {}
    for run in range(1, result.config.runs + 1):
        for m in modes:
            turns = [t for t in result.turns if t.get("mode") == m and t.get("run") == run and not t.get("warmup")
                     and t.get("index") is not None]
            for index in sorted({int(t["index"]) for t in turns}):
                group = [t for t in turns if t["index"] == index]
                labels.setdefault(index, str(group[0].get("question") or ""))
                last = next((t for t in reversed(group) if not t.get("cut_off")), group[-1])
                text = fmt(last.get("perceived_ms"), 0) if not last.get("cut_off") else "–"
                if any(t.get("cut_off") for t in group):
                    text = f"cut off ({len(group)} turns) → {text}"
                misses = sum(int(t.get("preemptive_misses") or 0) for t in group)
                if m.startswith("preemptive"):
                    text += " hit" if last.get("preemptive") == "hit" else ""
                    text += f" miss×{misses}" if misses else ""
                cells.setdefault((index, m), []).append(text)
    if not labels:
        return []
    out = ["", "### Questions (perceived ms per pass)", "", _row("#", "question", *modes),
           "|---|---|" + "---|" * len(modes)]
    for index in sorted(labels):
        out.append(_row(str(index), labels[index], *[" · ".join(cells.get((index, m), [])) or "–" for m in modes]))
    return out


def render_markdown(result: E2EResult, chart_link: str | None = None) -> str:
    """The report section (without markers): setup, definitions, machine, turns, perceived latency,
    questions, stages, critical path, telemetry, goals, chart."""
    modes = _modes(result)
    stats = all_stats(result.turns, modes)
    out = ["## End to end (`watus bench e2e`)", "", *_intro(result)]
    out += ["### Machine", "", _row("", ""), "|---|---|", *[_row(k, v) for k, v in result.machine.items()], ""]
    out += _turn_tables(stats)
    out += _question_table(result, modes)
    out += ["", "### Stages (ms after t0, the VAD's end of speech)", "", *_pair_header("stage", modes)]
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
    out += ["", "The VAD tail (t0 − the captured end of speech, measured per turn) lies before t0, so e2e does not "
            "contain it; the goal's sum and perceived do. In the sequential baseline \"first sentence\" is the "
            "whole reply and playback waits for the whole synthesis. A preemptive hit ran its stages during the "
            "tail (negative ms after t0 above) and is left out of this table."]
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
    out += [_row(g.name, g.goal, g.figures, f"**{g.verdict}**")
            for g in goal_checks(stats, expected_paused(result))]
    if chart_link:
        out += ["", "### Waterfall", "", f"![Stages of each turn from the true end of speech, per mode]({chart_link})"]
    if result.errors:
        out += ["", "Problems: " + "; ".join(result.errors)]
    return "\n".join(out) + "\n"


def chart_link(chart: Path, report: Path) -> str:
    """The chart's path relative to the report's folder, as a Markdown link wants it."""
    return Path(os.path.relpath(chart.resolve(), report.resolve().parent)).as_posix()


# --- JSONL and the JSON summary ----------------------------------------------------------------------------


def _percentiles(s: Summary | None) -> dict[str, float] | None:
    return None if s is None else {"p50": round(s.p50, 1), "p95": round(s.p95, 1), "n": s.n}


def json_summary(result: E2EResult) -> dict[str, Any]:
    """The machine-readable summary (`--json`): per mode p50/p95 of e2e and perceived, turns, cut-offs,
    preemptive hits and misses, the load while it ran; the goal verdicts and the problems."""
    cfg = result.config
    stats = all_stats(result.turns, list(cfg.modes))
    modes: dict[str, Any] = {}
    for m, s in stats.items():
        modes[m] = {"turns": s.turns, "timed": s.timed, "e2e_ms": _percentiles(s.e2e),
                    "perceived_ms": _percentiles(s.perceived), "cut_off_turns": s.cut_off_turns,
                    "questions": s.questions, "cut_off_questions": s.cut_off_questions,
                    "paused_questions": s.paused_questions, "paused_cut_off": s.paused_cut_off,
                    "preemptive": {"hits": s.hits, "misses": s.misses, "hit_rate": s.hit_rate,
                                   "paused_hits": s.paused_hits, "paused_misses": s.paused_misses,
                                   "not_preempted": s.not_preempted,
                                   "started_before_t0_ms": _percentiles(s.lead)},
                    "asr_ms": _percentiles(s.asr), "asr_settled_s": _percentiles(s.settled_s),
                    "turn_ends": s.turn_ends, "interrupted": s.interrupted, "failed": s.failed,
                    "other_cpu_percent": [t.other_cpu_percent for t in result.telemetry if t.mode == m]}
    return _jsonable({
        "started": result.started, "machine": result.machine, "llm_model": result.llm_model,
        "config": {"questions": list(cfg.questions), "paused_questions": list(cfg.paused_questions),
                   "runs": cfg.runs, "warmup": cfg.warmup, "modes": list(cfg.modes), "gap_s": cfg.gap_s,
                   "playback_s": cfg.playback_s, "max_tokens": cfg.max_tokens, "voice_variation": cfg.voice_variation,
                   "asr_incremental": cfg.asr_incremental,
                   "vision_source": cfg.vision_source},
        "modes": modes,
        "goals": [{**asdict(g), "passed": g.passed} for g in goal_checks(stats, expected_paused(result))],
        "errors": result.errors, "jsonl": result.jsonl_path, "chart": result.chart_path})


def write_json_summary(path: Path, result: E2EResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_summary(result), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_jsonl(path: Path, result: E2EResult) -> None:
    """A meta line, one line per turn (with its mode, stages from t0 and from the true end of speech, and
    non-overlapping parts), then a summary line per mode, a telemetry line per pass of a mode, and the goals."""
    modes = list(result.config.modes)
    lines: list[dict[str, Any]] = [{"type": "meta", "started": result.started, "config": asdict(result.config),
                                    "machine": result.machine, "llm_model": result.llm_model,
                                    "errors": result.errors, "chart": result.chart_path}]
    for r in result.turns:
        lines.append({"type": "turn", **r, "since_t0_ms": since_t0(r), "since_speech_end_ms": since_speech_end(r),
                      "critical_ms": critical_parts(r)})
    stats = all_stats(result.turns, modes)
    for m, s in stats.items():
        lines.append({"type": "summary", "mode": m, "turns": s.turns, "timed": s.timed,
                      "interrupted": s.interrupted, "cut": s.cut, "failed": s.failed, "e2e_ms": s.e2e,
                      "perceived_ms": s.perceived, "reply_chars": s.reply_chars, "cut_off_turns": s.cut_off_turns,
                      "cut_off_questions": s.cut_off_questions, "paused_cut_off": s.paused_cut_off,
                      "hits": s.hits, "misses": s.misses, "hit_rate": s.hit_rate, "turn_ends": s.turn_ends,
                      "stages_ms": s.stages, "critical_ms": s.parts})
    lines += [{"type": "telemetry", "mode": t.mode, "run": t.run, "other_cpu_percent": t.other_cpu_percent,
               **t.summary.as_dict()} for t in result.telemetry]
    lines += [{"type": "goal", **asdict(g)} for g in goal_checks(stats, expected_paused(result))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(_jsonable(line), ensure_ascii=False) + "\n")
