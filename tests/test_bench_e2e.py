"""`watus bench e2e`: the statistics and goal check on hand-made turn records, the report writers (Markdown,
JSONL, the waterfall PNG), and one real short run of the whole benchmark with every process.

The hand-made records have round numbers so each figure of the goal check can be checked by hand; the
real run checks that the pieces meet: piper's question reaches the agent through the audio service's
file microphone in both pipelines, and the turn records become a report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.helpers import free_port
from watus.bench import update_markdown_section
from watus.bench.e2e import PlaybackCutter, _questions, closest_question, e2e
from watus.bench.e2e_report import (
    E2EConfig,
    E2EResult,
    ModeTelemetry,
    chart_link,
    critical_parts,
    goal_checks,
    mode_stats,
    render_markdown,
    since_t0,
    waterfall_chart,
    write_jsonl,
)
from watus.core.telemetry import MeanMax, TelemetrySummary
from watus.core.wire.audio import Interrupted, PlaybackFinished, PlaybackStarted, SpeechStarted

MS = 1_000_000  # ns


def record(mode: str, offsets_ms: dict[str, float], tail_ms: float = 500.0, **extra: Any) -> dict[str, Any]:
    """A turn record as the agent writes it, with each stage `offsets_ms` after t0 (= 10 s)."""
    t0 = 10_000 * MS
    t_ns = {"speech_end": t0, **{k: t0 + int(v * MS) for k, v in offsets_ms.items()}}
    e2e = offsets_ms.get("playback_start")
    return {"turn_id": f"{mode}-{len(offsets_ms)}-{e2e}", "session_id": "s", "transcript": "What is your name?",
            "reply": "I am Watus.", "interrupted": False, "error": None, "mode": mode, "t_ns": t_ns,
            "audio_ms": {"end_silence": tail_ms, "asr": 300.0, "eos_to_transcript": offsets_ms.get("asr_done")},
            "e2e_ms": e2e, "warmup": False, "question": "What is your name?", **extra}


def streaming(asr: float, scene: float, first_token: float, sentence: float, tts: float, play: float) -> dict[str, Any]:
    return record("streaming", {"asr_done": asr, "scene_fetched": scene, "llm_first_token": first_token,
                                "first_sentence": sentence, "tts_first_audio": tts, "playback_start": play,
                                "playback_end": play + 3000})


def sequential(e2e: float) -> dict[str, Any]:
    return record("sequential", {"asr_done": 100, "scene_fetched": 110, "llm_first_token": 300,
                                 "first_sentence": e2e - 800, "tts_first_audio": e2e - 600, "playback_start": e2e,
                                 "playback_end": e2e + 5000})


@pytest.fixture
def turns() -> list[dict[str, Any]]:
    # Streaming e2e 1000/1100/1200 ms; its per-turn sum (tail 500 + the stages up to TTS first audio):
    # 500 + 990 = 1490, 500 + 1090 = 1590, 500 + 1190 = 1690 → p50 1590. Sequential e2e 3000/3300/3600.
    return [
        record("streaming", {"asr_done": 50, "scene_fetched": 60, "llm_first_token": 200}, warmup=True),
        streaming(100, 110, 300, 600, 990, 1000),
        streaming(120, 130, 350, 700, 1090, 1100),
        streaming(150, 160, 400, 800, 1190, 1200),
        sequential(3000), sequential(3300), sequential(3600),
        # A turn interrupted before it spoke: counted, but it has no e2e.
        record("sequential", {"asr_done": 100, "scene_fetched": 110}, interrupted=True, e2e_ms=None),
        # A reply the benchmark cut after e2e was measured: not an interruption of the turn's own.
        {**sequential(3300), "interrupted": True, "cut_by_bench": True, "turn_id": "cut"},
    ]


def result_of(turns: list[dict[str, Any]], **cfg: Any) -> E2EResult:
    return E2EResult(E2EConfig(**cfg), {"cpu": "test CPU", "cores": "2 logical"}, "2026-01-01T00:00:00+00:00",
                     turns=turns)


# --- pure statistics and goal logic ---------------------------------------------------------------------------


def test_stages_from_t0_and_the_parts_that_cannot_overlap() -> None:
    rec = streaming(100, 110, 300, 600, 990, 1000)
    assert since_t0(rec) == pytest.approx({"asr_done": 100, "scene_fetched": 110, "llm_first_token": 300,
                                           "first_sentence": 600, "tts_first_audio": 990, "playback_start": 1000,
                                           "playback_end": 4000})
    parts = critical_parts(rec)
    assert parts == pytest.approx({"vad_tail": 500, "asr": 100, "scene": 10, "llm_first_sentence": 490,
                                   "tts_first_chunk": 390, "sum": 1490})
    assert critical_parts(record("streaming", {"asr_done": 100})) is None  # a stage missing
    assert critical_parts({**rec, "audio_ms": {}}) is None  # no VAD tail from the audio service
    assert since_t0({"t_ns": {}}) == {}


def test_mode_stats(turns: list[dict[str, Any]]) -> None:
    s = mode_stats(turns, "streaming")
    assert (s.turns, s.timed, s.interrupted, s.cut, s.failed) == (3, 3, 0, 0, 0)  # the warm-up is left out
    assert s.e2e is not None and (s.e2e.p50, s.e2e.n) == (1100, 3)
    assert s.stages["first_sentence"] is not None and s.stages["first_sentence"].p50 == pytest.approx(700)
    assert s.parts["sum"] is not None and s.parts["sum"].p50 == pytest.approx(1590)
    assert s.parts["e2e_minus_in_e2e_parts"] is not None
    assert s.parts["e2e_minus_in_e2e_parts"].p50 == pytest.approx(10)  # TTS first audio → playback start
    q = mode_stats(turns, "sequential")
    assert (q.turns, q.timed, q.interrupted, q.cut) == (5, 4, 1, 1)
    assert q.e2e is not None and q.e2e.p50 == pytest.approx(3300)


def test_goal_checks_pass(turns: list[dict[str, Any]]) -> None:
    stats = {m: mode_stats(turns, m) for m in ("streaming", "sequential")}
    vs_seq, vs_sum = goal_checks(stats)
    assert vs_seq.verdict == "PASS", vs_seq  # 1100 / 3300 = 0.333 ≤ 0.5
    assert "1,100 / 3,300 ms = 0.333×" in vs_seq.figures and "n=3/4" in vs_seq.figures
    assert vs_sum.verdict == "PASS", vs_sum  # 1100 / 1590 = 0.692 ≤ 1.2
    assert "1,100 / 1,590 ms = 0.692×" in vs_sum.figures
    assert "without the VAD tail" in vs_sum.figures and "1.009×" in vs_sum.figures  # 1100 / 1090
    assert vs_sum.passed is True


def test_goal_checks_fail_and_not_measured() -> None:
    # Streaming barely faster than sequential, and slow to start playing after its first chunk.
    slow = [streaming(100, 110, 300, 600, 700, 2500 + i) for i in range(3)]
    seq = [sequential(2600 + 10 * i) for i in range(3)]
    stats = {m: mode_stats(slow + seq, m) for m in ("streaming", "sequential")}
    vs_seq, vs_sum = goal_checks(stats)
    assert vs_seq.verdict == "FAIL" and vs_seq.passed is False
    assert vs_sum.verdict == "FAIL"  # 2501 / (500 + 700) = 2.08 > 1.2
    only = goal_checks({"streaming": mode_stats(slow, "streaming")})
    assert only[0].verdict == "N/A" and "sequential" in only[0].figures
    assert only[1].verdict == "FAIL"
    assert [g.verdict for g in goal_checks({})] == ["N/A", "N/A"]


def test_questions_option() -> None:
    assert _questions(None) == E2EConfig.questions
    assert _questions(["1"]) == E2EConfig.questions[:1]
    assert len(_questions(["6"])) == 6 and _questions(["6"])[4] == E2EConfig.questions[0]  # repeated as needed
    assert _questions(["Who are you?", " Where am I? "]) == ("Who are you?", "Where am I?")
    with pytest.raises(typer.BadParameter):
        _questions(["0"])
    assert closest_question("how many people are here", list(E2EConfig.questions)) == (
        "How many people are here?", 0.0)
    question, wer = closest_question("people are here", list(E2EConfig.questions))
    assert question == "How many people are here?" and 0 < wer < 1


def test_playback_cutter_reads_typed_audio_events() -> None:
    # Nothing listens at its URL: only the events fed here reach it, and its timers are cancelled on exit.
    with PlaybackCutter(f"http://127.0.0.1:{free_port()}", after_s=60.0) as cutter:
        cutter.feed(PlaybackStarted(t_ns=1, turn_id="t1", first_audio_ms=80.0).model_dump_json())
        cutter.feed(SpeechStarted(t_ns=2, audio_s=3.0, captured_ns=2).model_dump_json())  # robot quiet
        cutter.feed(PlaybackFinished(t_ns=3, turn_id="t1", played_ms=900.0, final=False).model_dump_json())
        assert cutter.spoken_over == 0 and not cutter.invalid
        # A question over the reply (the agent barges in), and one the audio service stopped playback for.
        cutter.feed(SpeechStarted(t_ns=4, audio_s=9.0, captured_ns=4, during_playback=True).model_dump_json())
        cutter.feed(SpeechStarted(t_ns=5, audio_s=19.0, captured_ns=5, barge_in=True).model_dump_json())
        cutter.feed(Interrupted(t_ns=6, turn_id="t1", reason="barge_in").model_dump_json())
        assert cutter.spoken_over == 2
        # Events that do not match the contract are counted by type, never guessed at.
        cutter.feed('{"type": "playback_started", "t_ns": 7}')  # no turn_id
        cutter.feed('{"type": "speech_started", "t_ns": 8, "audio_s": 1.0, "captured_ns": 8, "extra": 1}')
        cutter.feed("{not json")
        assert dict(cutter.invalid) == {"playback_started": 1, "speech_started": 1, "json": 1}
        assert cutter.cut == set()


# --- the writers --------------------------------------------------------------------------------------------


def test_markdown_jsonl_and_chart(turns: list[dict[str, Any]], tmp_path: Path) -> None:
    result = result_of(turns)
    result.telemetry = [ModeTelemetry("streaming", 1, TelemetrySummary("psutil", 3, 1.5, cpu_percent=MeanMax(40, 80)),
                                      12.5)]
    report = tmp_path / "docs" / "benchmarks.md"
    chart = waterfall_chart(result, tmp_path / "docs" / "e2e_waterfall.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    link = chart_link(chart, report)
    assert link == "e2e_waterfall.png"
    update_markdown_section(report, "e2e", render_markdown(result, link))
    text = report.read_text()
    assert "<!-- bench:e2e:start -->" in text and "<!-- bench:e2e:end -->" in text
    assert "| streaming | 3 | 3 | 0 | 0 | 0 | 11 | 1,100 |" in text  # turns, reply chars, e2e p50
    assert "| sequential | 5 | 4 | 1 | 1 | 0 | 11 | 3,300 |" in text
    assert "| stage | streaming p50 | streaming p95 | sequential p50 | sequential p95 |" in text
    assert "| LLM to first sentence | 570 |" in text
    assert "| **sum** (per turn) | 1,590 |" in text
    assert "| streaming vs sequential | streaming e2e p50 ≤ 0.5 × sequential e2e p50 |" in text
    assert "= 0.333×" in text and text.count("**PASS**") == 2
    assert "![Stages of each turn from end of speech, per mode](e2e_waterfall.png)" in text
    assert "| streaming | 1 | psutil | 3 | – | 40 / 80 | 12 | – | – |" in text  # telemetry of the pass

    result.jsonl_path = tmp_path / "e2e.jsonl"
    result.chart_path = chart
    write_jsonl(result.jsonl_path, result)
    lines = [json.loads(x) for x in result.jsonl_path.read_text().splitlines()]
    assert [x["type"] for x in lines].count("turn") == len(turns)
    assert lines[0]["type"] == "meta" and lines[0]["chart"] == str(chart)
    summary = {x["mode"]: x for x in lines if x["type"] == "summary"}
    assert summary["streaming"]["e2e_ms"]["p50"] == 1100
    assert summary["streaming"]["critical_ms"]["sum"]["p50"] == pytest.approx(1590)
    assert [x["verdict"] for x in lines if x["type"] == "goal"] == ["PASS", "PASS"]
    (tel,) = [x for x in lines if x["type"] == "telemetry"]
    assert tel["mode"] == "streaming" and tel["other_cpu_percent"] == 12.5 and tel["cpu_percent"]["max"] == 80
    first_turn = next(x for x in lines if x["type"] == "turn" and not x["warmup"])
    assert first_turn["critical_ms"]["sum"] == pytest.approx(1490)


def test_chart_of_one_mode_and_no_turns(tmp_path: Path) -> None:
    one = result_of([streaming(100, 110, 300, 600, 990, 1000)], modes=("streaming",))
    assert waterfall_chart(one, tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    empty = result_of([])
    assert waterfall_chart(empty, tmp_path / "empty.png").exists()
    text = render_markdown(empty)
    assert "not measured" in text and "**N/A**" in text


# --- one real run ---------------------------------------------------------------------------------------------


def test_real_run_one_question_per_mode(tmp_path: Path) -> None:
    """The whole benchmark through its command: LLM server, agent and audio per mode, no vision."""
    app = typer.Typer()
    app.command()(e2e)
    report = tmp_path / "docs" / "benchmarks.md"
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["--questions", "What is your name?", "--runs", "1", "--warmup", "0",
                                   "--no-vision", "--gap", "12", "--playback-s", "1.5", "--max-tokens", "32",
                                   "--out-dir", str(out), "--report", str(report)])
    assert res.exit_code == 0, res.output
    (jsonl,) = out.glob("e2e-*[0-9].jsonl")  # not the turn logs (e2e-<stamp>-<mode>-turns.jsonl)
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert lines[0]["errors"] == [], lines[0]["errors"]
    recs = {x["mode"]: x for x in lines if x["type"] == "turn"}
    assert set(recs) == {"streaming", "sequential"}
    for mode, rec in recs.items():
        assert rec["question"] == "What is your name?" and rec["question_wer"] <= 0.25, rec["transcript"]
        assert rec["error"] is None and rec["reply"], rec
        assert rec["e2e_ms"] is not None and 0 < rec["e2e_ms"] < 30_000, rec
        assert rec["critical_ms"] is not None and rec["critical_ms"]["vad_tail"] > 0, rec
        assert rec["t_ns"]["speech_end"] < rec["t_ns"]["asr_done"] <= rec["t_ns"]["playback_start"], rec
        assert rec["mode"] == mode and rec["run"] == 1 and rec["index"] == 0 and not rec["warmup"]
        assert rec["scene"]["error"]  # no vision: the agent knew it could not see
    text = report.read_text()
    assert "<!-- bench:e2e:start -->" in text and "### Goal check" in text
    assert "](e2e_waterfall.png)" in text
    assert {(x["mode"], x["run"]) for x in lines if x["type"] == "telemetry"} == {("streaming", 1), ("sequential", 1)}
    assert (report.parent / "e2e_waterfall.png").read_bytes()[:4] == b"\x89PNG"
