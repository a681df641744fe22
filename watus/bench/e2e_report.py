"""The figures of `watus bench e2e`: its configuration and result, and per-mode statistics of the turn records.

Everything here is a pure function of the turn records the agent wrote (plus what the benchmark added:
mode, pass, question, cut-off), so the arithmetic behind the goal checks (`e2e_goals`) can be tested on
hand-made records and re-run on an old JSONL. The writers are `e2e_writers` (Markdown, JSONL, JSON
summary) and `e2e_chart` (the waterfall).

Two latencies, both on the machine-wide monotonic clock:
- **e2e** = playback start − t0, t0 being the VAD's end-of-speech decision (`speech_end`);
- **perceived** = playback start − the capture time of the last speech frame (`speech_end_captured_ns`):
  what a person waits, the VAD tail included. For a preemptive reply the stages up to its first audio ran
  before t0, during the tail, so only perceived compares the modes fairly.
The VAD tail is t0 − the captured end, measured per turn (the audio service's own `end_silence` figure
where a record lacks the captured end).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watus.agent.turnlog import STAGES
from watus.bench.e2e_questions import PAUSED_QUESTIONS, Question, parse_question
from watus.bench.e2e_turns import cut_off_questions, hit_rate, preemption
from watus.bench.stats import Summary, summarize
from watus.core.telemetry import TelemetrySummary

#: The pipelines compared. `preemptive` is streaming with the reply started at the first pause (its audio held
#: until the final transcript confirms it) and the end of the turn decided by the Smart Turn model.
MODES = ("sequential", "streaming", "preemptive")
#: Run only when asked (`--modes`): `preemptive-tail` is preemptive replies with the turn ended by the VAD's
#: silence tail alone, as in streaming: the held reply plays at t0 instead of after the model's wait.
KNOWN_MODES = (*MODES, "preemptive-tail")

STAGE_LABELS = {
    "asr_done": "ASR done (transcript)",
    "scene_fetched": "scene fetched",
    "llm_first_token": "LLM first token",
    "first_sentence": "first sentence complete",
    "tts_first_audio": "TTS first audio",
    "playback_start": "playback start (= e2e)",
    "playback_end": "playback end",
}
#: The stages that cannot overlap, in order: (key, label, start stage, end stage). The VAD tail is before t0
#: (`vad_tail_ms`); the others are differences of the record's `t_ns`.
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
    #: Questions with a mid-sentence pause, spoken after `questions` (specs as `e2e_questions` reads them).
    paused_questions: tuple[str, ...] = PAUSED_QUESTIONS
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
    #: Piper speaks the questions with its sampling noise: a new rendition in every run. Off (the default),
    #: a question is the same audio in every run, so two runs compare turn by turn.
    voice_variation: bool = False
    #: The audio service transcribes a long utterance while it is spoken (`WATUS_AUDIO_ASR_INCREMENTAL`);
    #: None: the service's own setting (on).
    asr_incremental: bool | None = None
    startup_timeout_s: float = 180.0
    #: Wait for the last records after the microphone file has played: a turn heard at its end may take the
    #: agent's LLM timeout (60 s) and the playback cut on a starved CPU (the pass ends as soon as all are in).
    settle_timeout_s: float = 120.0

    def spoken(self) -> list[Question]:
        """The timed questions of a pass, in play order (warm-up not included)."""
        return [parse_question(q) for q in (*self.questions, *self.paused_questions)]


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
    #: Turn records as the agent wrote them, plus what the benchmark added: `mode`, `run`, `index` (of the
    #: question in the pass), `question`, `paused`, `warmup`, `cut_off`, `utterance` (`e2e_turns.label_pass`).
    turns: list[dict[str, Any]] = field(default_factory=list)
    telemetry: list[ModeTelemetry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    llm_model: str | None = None  # as the LLM server lists it
    jsonl_path: Path | None = None
    chart_path: Path | None = None
    json_path: Path | None = None


# --- per-turn arithmetic -----------------------------------------------------------------------------------


def since_t0(record: dict[str, Any]) -> dict[str, float]:
    """Milliseconds from end of speech (t0) to each stage the record has (empty without `speech_end`)."""
    t = record.get("t_ns") or {}
    t0 = t.get("speech_end")
    if t0 is None:
        return {}
    return {stage: (t[stage] - t0) / 1e6 for stage in STAGES[1:] if t.get(stage) is not None}


def vad_tail_ms(record: dict[str, Any]) -> float | None:
    """t0 − the captured end of speech (ms); the audio service's `end_silence` where the record lacks it."""
    captured, t0 = record.get("speech_end_captured_ns"), (record.get("t_ns") or {}).get("speech_end")
    if captured is not None and t0 is not None:
        return (t0 - captured) / 1e6
    tail = (record.get("audio_ms") or {}).get("end_silence")
    return None if tail is None else float(tail)


def since_speech_end(record: dict[str, Any]) -> dict[str, float]:
    """Milliseconds from the true end of speech (the captured end; t0 − VAD tail without it) to t0
    (`speech_end`), to each stage, and to the speculative transcript of a preemptive reply (`speculative`)."""
    t = record.get("t_ns") or {}
    t0, tail = t.get("speech_end"), vad_tail_ms(record)
    if t0 is None or tail is None:
        return {}
    zero = t0 - tail * 1e6
    out = {stage: (t[stage] - zero) / 1e6 for stage in STAGES if t.get(stage) is not None}
    if record.get("preemptive") == "hit" and record.get("speculative_ns") is not None:
        out["speculative"] = (record["speculative_ns"] - zero) / 1e6
    return out


def critical_parts(record: dict[str, Any]) -> dict[str, float] | None:
    """The stages that cannot overlap and their `sum`, in ms; None if the record lacks one of them, or is a
    preemptive reply (its stages overlap the VAD tail by design)."""
    if record.get("preemptive") == "hit":
        return None
    t = record.get("t_ns") or {}
    tail = vad_tail_ms(record)
    if tail is None:
        return None
    parts: dict[str, float] = {"vad_tail": tail}
    for key, _label, start, end in CRITICAL_PARTS[1:]:
        if t.get(start) is None or t.get(end) is None:
            return None
        parts[key] = (t[end] - t[start]) / 1e6
    parts["sum"] = sum(parts.values())
    return parts


def counted_turns(turns: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """The mode's turns that are not warm-up."""
    return [r for r in turns if r.get("mode") == mode and not r.get("warmup")]


def timed_turns(turns: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """The mode's turns that count for latency: not warm-up, not cut off, and reached playback (an e2e)."""
    return [r for r in counted_turns(turns, mode) if r.get("e2e_ms") is not None and not r.get("cut_off")]


@dataclass(frozen=True)
class ModeStats:
    mode: str
    turns: int  # records of the mode, warm-up excluded
    timed: int  # of which count for latency (an e2e figure, not cut off)
    interrupted: int  # by anything but the benchmark's playback cut (a barge-in, a failure)
    cut: int  # replies the benchmark stopped after `playback_s`
    failed: int
    e2e: Summary | None
    perceived: Summary | None
    #: Characters of the replies (the sequential baseline's cost grows with them; streaming's does not).
    reply_chars: Summary | None
    #: Per stage of `STAGE_LABELS`: ms after t0.
    stages: dict[str, Summary | None]
    #: Per key of `CRITICAL_PARTS`, plus `sum` and `e2e_minus_in_e2e_parts` (what playback start adds).
    parts: dict[str, Summary | None]
    cut_off_turns: int = 0  # turns that ended while the question went on (`e2e_turns`)
    questions: int = 0  # spoken questions (run, index) with a turn, warm-up excluded
    cut_off_questions: int = 0
    paused_questions: int = 0  # of `questions`, those with a mid-sentence pause
    paused_cut_off: int = 0
    hits: int = 0  # preemptive replies confirmed by the final transcript
    misses: int = 0  # preemptive replies thrown away
    paused_hits: int = 0  # of those, on the questions with a pause
    paused_misses: int = 0
    #: Turns of a voice question no preemptive reply was tried for (preemptive mode only; the agent
    #: skips the speculative transcript while a confirmed reply is still under way).
    not_preempted: int = 0
    turn_ends: dict[str, int] = field(default_factory=dict)  # how the audio service ended each utterance
    #: Per hit: t0 − when the speculative transcript it started from was ready (ms). Positive: the reply
    #: started before the VAD's end of speech; negative: the speculative ASR finished after t0 (no gain).
    lead: Summary | None = None
    #: The last ASR pass of each timed turn (ms), and the question's seconds transcribed while it was
    #: spoken (`asr_settled`; turns without are left out).
    asr: Summary | None = None
    settled_s: Summary | None = None

    @property
    def hit_rate(self) -> float | None:
        return hit_rate(self.hits, self.misses)


def preemptive_lead_ms(record: dict[str, Any]) -> float | None:
    """t0 − the speculative transcript a hit started from (ms); None for anything but a hit with both."""
    t0, spec = (record.get("t_ns") or {}).get("speech_end"), record.get("speculative_ns")
    if record.get("preemptive") != "hit" or t0 is None or spec is None:
        return None
    return (t0 - spec) / 1e6


def mode_stats(turns: list[dict[str, Any]], mode: str) -> ModeStats:
    counted = counted_turns(turns, mode)
    timed = timed_turns(turns, mode)
    offsets = [since_t0(r) for r in timed]
    stages = {s: summarize(o.get(s) for o in offsets) for s in STAGE_LABELS}
    per_turn = [(r, critical_parts(r)) for r in timed]
    keys = [k for k, *_ in CRITICAL_PARTS] + ["sum"]
    parts = {k: summarize(p[k] for _, p in per_turn if p is not None) for k in keys}
    parts["e2e_minus_in_e2e_parts"] = summarize(
        float(r["e2e_ms"]) - (p["sum"] - p["vad_tail"]) for r, p in per_turn if p is not None)
    asked = {(r.get("run"), r.get("index")) for r in counted if r.get("index") is not None}
    paused = {(r.get("run"), r.get("index")) for r in counted if r.get("paused") and r.get("index") is not None}
    cut_qs = cut_off_questions(counted)
    hits, misses = preemption(counted)
    p_hits, p_misses = preemption([r for r in counted if r.get("paused")])
    not_preempted = sum(mode.startswith("preemptive") and r.get("preemptive") is None
                        and r.get("source", "voice") == "voice" for r in counted)
    ends = Counter(str(end["decision"]) for r in counted if (end := (r.get("utterance") or {}).get("turn_end")))
    return ModeStats(mode=mode, turns=len(counted), timed=len(timed),
                     interrupted=sum(bool(r.get("interrupted")) and not r.get("cut_by_bench") for r in counted),
                     cut=sum(bool(r.get("cut_by_bench")) for r in counted),
                     failed=sum(r.get("error") is not None for r in counted),
                     e2e=summarize(float(r["e2e_ms"]) for r in timed),
                     perceived=summarize(r.get("perceived_ms") for r in timed),
                     reply_chars=summarize(len(str(r.get("reply") or "")) for r in timed if r.get("reply")),
                     stages=stages, parts=parts,
                     cut_off_turns=sum(bool(r.get("cut_off")) for r in counted), questions=len(asked),
                     cut_off_questions=len(cut_qs), paused_questions=len(paused),
                     paused_cut_off=len(cut_qs & paused), hits=hits, misses=misses, paused_hits=p_hits,
                     paused_misses=p_misses, not_preempted=not_preempted, turn_ends=dict(sorted(ends.items())),
                     lead=summarize(preemptive_lead_ms(r) for r in timed),
                     asr=summarize((r.get("audio_ms") or {}).get("asr") for r in timed),
                     settled_s=summarize(s / 1000 for r in timed
                                         if (s := (r.get("audio_ms") or {}).get("asr_settled"))))


def all_stats(turns: list[dict[str, Any]], modes: tuple[str, ...] | list[str]) -> dict[str, ModeStats]:
    return {m: mode_stats(turns, m) for m in modes}
