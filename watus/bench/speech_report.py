"""`watus bench speech`'s settings, results and what is written of them: goal checks, the Markdown section
and the JSONL.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from watus.bench.report import cell as _p
from watus.bench.report import row as _row
from watus.bench.speech_workload import EOS_SENTENCES, TTS_REPLIES
from watus.bench.stats import Summary, fmt, summarize

GOAL_EOS_TO_TRANSCRIPT_MS = 500.0
GOAL_TTS_FIRST_AUDIO_MS = 300.0


@dataclass
class SpeechBenchConfig:
    asr_models: tuple[str, ...] = ("tiny.en", "base")
    runs: int = 3  # timed transcriptions per WAV and model; TTS requests per reply
    warmup: int = 1
    threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    eos_rounds: int = 1  # passes over EOS_SENTENCES through the live pipeline
    compare_plain: bool = True  # also measure end of speech → transcript without speculative ASR


@dataclass
class SpeechBenchResult:
    config: SpeechBenchConfig
    machine: dict[str, str]
    started: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    jsonl_path: Path | None = None
    #: Per part: % of the machine's CPU used by processes other than the benchmark and its service.
    other_cpu_percent: dict[str, float] = field(default_factory=dict)

    def values(self, type_: str, key: str, **match: object) -> list[float]:
        return [float(r[key]) for r in self.rows
                if r["type"] == type_ and r.get(key) is not None and all(r.get(k) == v for k, v in match.items())]

    def summary(self, type_: str, key: str, **match: object) -> Summary | None:
        return summarize(self.values(type_, key, **match))


@dataclass(frozen=True)
class GoalCheck:
    name: str
    goal: str
    figures: str
    passed: bool | None


def goal_checks(result: SpeechBenchResult) -> list[GoalCheck]:
    checks = []
    eos = result.summary("eos", "eos_to_transcript_ms", variant="speculative")
    goal = f"≤ {GOAL_EOS_TO_TRANSCRIPT_MS:.0f} ms for a 3-second utterance (p50; p95 shown)"
    if eos is None:
        checks.append(GoalCheck("end of speech → transcript", goal, "not measured", None))
    else:
        checks.append(GoalCheck("end of speech → transcript", goal,
                                f"p50 {eos.p50:.0f} ms, p95 {eos.p95:.0f} ms (n={eos.n})",
                                eos.p50 <= GOAL_EOS_TO_TRANSCRIPT_MS))
    tts = result.summary("tts", "first_audio_ms")
    goal = f"≤ {GOAL_TTS_FIRST_AUDIO_MS:.0f} ms for a one-sentence reply (p50; p95 shown)"
    if tts is None:
        checks.append(GoalCheck("TTS first audio", goal, "not measured", None))
    else:
        checks.append(GoalCheck("TTS first audio", goal, f"p50 {tts.p50:.0f} ms, p95 {tts.p95:.0f} ms (n={tts.n})",
                                tts.p50 <= GOAL_TTS_FIRST_AUDIO_MS))
    return checks


def render_markdown(result: SpeechBenchResult) -> str:
    """The report section (without markers): machine, ASR per model, TTS, end of speech → transcript, goals."""
    cfg = result.config
    out = ["## Speech (`watus bench speech`)", "",
           f"Measured {result.started}: {cfg.threads} CPU threads per model, {cfg.warmup} warm-up + {cfg.runs} timed "
           f"runs per WAV (ASR) and per reply (TTS), {cfg.eos_rounds} pass(es) over {len(EOS_SENTENCES)} live "
           "utterances. All audio is spoken by piper (en_US joe-medium) at run time."
           + (f" Raw data: `{result.jsonl_path}`." if result.jsonl_path else ""), "",
           "ASR latency: transcription time of a whole utterance in-process (no HTTP), RTF = latency / audio "
           "length. TTS first audio: `POST /v1/audio/speech` sent → first PCM byte received (the service "
           "splits a long first sentence at a comma). End of speech → transcript: t0 (the VAD declares end of "
           "speech after 500 ms of silence) → the `transcript` event, from a live `python -m audio` whose "
           "microphone is a WAV file played in real time.", ""]
    out += ["### Machine", "", _row("", ""), "|---|---|", *[_row(k, v) for k, v in result.machine.items()]]
    if result.other_cpu_percent:
        out.append(_row("CPU used by other processes", ", ".join(
            f"{part} {pct:.0f}%" for part, pct in result.other_cpu_percent.items())))
    out.append("")
    out += ["### ASR", "", _row("model", "audio s", "latency p50 ms", "latency p95 ms", "RTF p50", "RTF p95", "WER",
                                "load ms"), "|---|---|---|---|---|---|---|---|"]
    for model in cfg.asr_models:
        rows = [r for r in result.rows if r["type"] == "asr" and r["model"] == model]
        for seconds in sorted({r["audio_s"] for r in rows}):
            lat = result.summary("asr", "latency_ms", model=model, audio_s=seconds)
            rtf = result.summary("asr", "rtf", model=model, audio_s=seconds)
            w = result.summary("asr", "wer", model=model, audio_s=seconds)
            load = next(r["load_ms"] for r in rows)
            out.append(_row(model, f"{seconds:.1f}", _p(lat, "p50", 0), _p(lat, "p95", 0), _p(rtf, "p50", 3),
                            _p(rtf, "p95", 3), _p(w, "mean", 2), fmt(load, 0)))
    out += ["", "### TTS", "", _row("reply", "chars", "audio s", "first audio p50 ms", "first audio p95 ms",
                                    "total p50 ms", "RTF p50"), "|---|---|---|---|---|---|---|"]
    for text in TTS_REPLIES:
        first = result.summary("tts", "first_audio_ms", text=text)
        total = result.summary("tts", "total_ms", text=text)
        rtf = result.summary("tts", "rtf", text=text)
        audio_s = result.summary("tts", "audio_s", text=text)
        out.append(_row(text, str(len(text)), _p(audio_s, "p50", 2), _p(first, "p50", 0), _p(first, "p95", 0),
                        _p(total, "p50", 0), _p(rtf, "p50", 3)))
    out += ["", "### End of speech → transcript (live pipeline)", "",
            _row("variant", "utterances", "speech ms p50", "EOS → transcript p50 ms", "p95 ms", "max ms",
                 "ASR ms p50", "speculative result used", "WER"), "|---|---|---|---|---|---|---|---|---|"]
    for variant in ("speculative", "plain"):
        rows = [r for r in result.rows if r["type"] == "eos" and r["variant"] == variant]
        if not rows:
            continue
        eos = result.summary("eos", "eos_to_transcript_ms", variant=variant)
        out.append(_row(variant, str(len(rows)), _p(result.summary("eos", "speech_ms", variant=variant), "p50", 0),
                        _p(eos, "p50", 0), _p(eos, "p95", 0), _p(eos, "max", 0),
                        _p(result.summary("eos", "asr_ms", variant=variant), "p50", 0),
                        f"{sum(bool(r['speculative_used']) for r in rows)}/{len(rows)}",
                        _p(result.summary("eos", "wer", variant=variant), "mean", 2)))
    out += ["", "### Goal check", "", _row("check", "goal", "figures", "result"), "|---|---|---|---|"]
    for g in goal_checks(result):
        out.append(_row(g.name, g.goal, g.figures, "**n/a**" if g.passed is None else
                        ("**PASS**" if g.passed else "**FAIL**")))
    if result.errors:
        out += ["", "Problems: " + "; ".join(result.errors)]
    return "\n".join(out) + "\n"


def write_jsonl(path: Path, result: SpeechBenchResult) -> None:
    lines: list[dict[str, Any]] = [{"type": "meta", "started": result.started, "config": asdict(result.config),
                                    "machine": result.machine, "errors": result.errors,
                                    "other_cpu_percent": result.other_cpu_percent}]
    lines += result.rows
    for key, type_, attr in (("asr_latency_ms", "asr", "latency_ms"), ("asr_rtf", "asr", "rtf"),
                             ("tts_first_audio_ms", "tts", "first_audio_ms"), ("tts_rtf", "tts", "rtf")):
        s = result.summary(type_, attr)
        lines.append({"type": "summary", "figure": key, **(s.as_dict() if s else {})})
    for variant in ("speculative", "plain"):
        s = result.summary("eos", "eos_to_transcript_ms", variant=variant)
        if s is not None:
            lines.append({"type": "summary", "figure": f"eos_to_transcript_ms_{variant}", **s.as_dict()})
    lines += [{"type": "goal", **asdict(g)} for g in goal_checks(result)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
