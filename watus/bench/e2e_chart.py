"""The waterfall chart of `watus bench e2e`: every timed turn's stages from the true end of speech.

x = 0 is the capture time of the last speech frame (`speech_end_captured_ns`), so the first bar of a turn
is the VAD tail, measured (t0 − the captured end), and a bar's right end is what the person waited
(perceived). A preemptive hit's reply started at the speculative transcript of the first pause, during the
tail: its row shows that transcript's wait, the stages of the reply, the audio held until the final
transcript confirmed it (hatched), and the VAD tail as a thin bar beneath.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from watus.agent.turnlog import STAGES
from watus.bench.e2e_report import E2EResult, since_speech_end, timed_turns
from watus.bench.stats import fmt, summarize

#: Segment colours per stage (the segment ends at that stage and starts at the one before it).
_COLOURS = {
    "vad_tail": "#b0b0b0", "speculative": "#9ecae1", "asr_done": "#4c72b0", "scene_fetched": "#8172b2",
    "llm_first_token": "#dd8452", "first_sentence": "#c44e52", "tts_first_audio": "#55a868",
    "playback_start": "#937860", "playback_end": "#ccb974",
}
_SEGMENT_LABELS = {
    "vad_tail": "VAD tail (to t0)", "speculative": "first pause → speculative transcript", "asr_done": "ASR",
    "scene_fetched": "scene", "llm_first_token": "LLM to first token",
    "first_sentence": "LLM first token → first sentence", "tts_first_audio": "TTS first chunk",
    "playback_start": "to playback start (hatched: held until confirmed)", "playback_end": "speaking",
}
_REPLY = STAGES[2:]  # scene_fetched ... playback_end: the reply's own stages


def _turn_label(record: dict[str, Any], row: int, warmup: int) -> str:
    # Run.place in the pass, so a turn left out (no e2e, cut off) shows as a gap in the numbers.
    index = record.get("index")
    number = f"{record.get('run', 1)}.{int(index) - warmup + 1}" if index is not None else str(row + 1)
    return f"{number} {str(record.get('question') or record.get('transcript', ''))[:30]}"


def _segments(rec: dict[str, Any]) -> tuple[list[tuple[str, float, float]], float | None]:
    """(stage, start ms, end ms) of each bar from the true end of speech, and t0 where the tail is drawn thin."""
    at = since_speech_end(rec)
    t0 = at.get("speech_end")
    if t0 is None:
        return [], None
    bars: list[tuple[str, float, float]] = []
    if rec.get("preemptive") == "hit":
        previous = at.get("speculative")
        if previous is not None:
            bars.append(("speculative", 0.0, previous))
        for stage in _REPLY:
            if stage in at:
                if previous is not None:
                    bars.append((stage, previous, at[stage]))
                previous = at[stage]
        return bars, t0
    bars.append(("vad_tail", 0.0, t0))
    previous = t0
    for stage in STAGES[1:]:
        if stage in at:
            bars.append((stage, previous, at[stage]))
            previous = at[stage]
    return bars, None


def waterfall_chart(result: E2EResult, path: Path) -> Path:
    """A PNG: per mode a panel, per timed turn a row of horizontal bars from the true end of speech (x = 0)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    modes = [m for m in result.config.modes if timed_turns(result.turns, m)] or list(result.config.modes)
    rows = {m: timed_turns(result.turns, m) for m in modes}
    heights = [max(1, len(rows[m])) for m in modes]
    fig = Figure(figsize=(11, 1.8 + 0.42 * sum(heights) + 0.5 * len(modes)), layout="constrained")
    axes = fig.subplots(len(modes), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    longest = max((float(r.get("perceived_ms") or r["e2e_ms"]) for m in modes for r in rows[m]), default=1000.0)
    for ax, mode in zip(axes, modes, strict=True):
        turns = rows[mode]
        for y, rec in enumerate(turns):
            bars, thin_tail = _segments(rec)
            for stage, start, end in bars:
                held = stage == "playback_start" and rec.get("preemptive") == "hit"
                ax.barh(y, max(0.0, end - start), left=start, color=_COLOURS[stage], height=0.6,
                        alpha=0.35 if stage == "playback_end" else 1.0, hatch="///" if held else None,
                        edgecolor="white" if held else None, linewidth=0)
            if thin_tail is not None:
                ax.barh(y + 0.38, thin_tail, left=0.0, color=_COLOURS["vad_tail"], height=0.14)
            perceived = rec.get("perceived_ms")
            end = float(perceived) if perceived is not None else float(rec["e2e_ms"])
            ax.text(end + longest * 0.01, y, f"{fmt(perceived, 0)} ms (e2e {float(rec['e2e_ms']):,.0f})",
                    va="center", fontsize=8)
        labels = [_turn_label(r, i, result.config.warmup) for i, r in enumerate(turns)]
        ax.set_yticks(range(len(turns)), labels, fontsize=8)
        ax.set_ylim(len(turns) - 0.4 if turns else 0.5, -0.5)
        ax.axvline(0, color="black", linewidth=0.8)
        perceived_p50 = summarize(r.get("perceived_ms") for r in turns)
        e2e_p50 = summarize(float(r["e2e_ms"]) for r in turns)
        cut = sum(bool(r.get("cut_off")) for r in result.turns if r.get("mode") == mode and not r.get("warmup"))
        ax.set_title(f"{mode}: perceived p50 {fmt(perceived_p50.p50 if perceived_p50 else None, 0)} ms, e2e p50 "
                     f"{fmt(e2e_p50.p50 if e2e_p50 else None, 0)} ms ({len(turns)} turns"
                     + (f"; {cut} cut-off turn(s) not shown" if cut else "") + ")", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlim(-60, longest * 1.22 + 100)
    axes[-1].set_xlabel("ms after the true end of speech (last speech frame captured); label: perceived "
                        "(e2e from t0)")
    handles = [Patch(color=c, label=_SEGMENT_LABELS[k], alpha=0.35 if k == "playback_end" else 1.0)
               for k, c in _COLOURS.items()]
    fig.suptitle("Watus spoken turns: stages from the true end of speech", fontsize=11)
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
