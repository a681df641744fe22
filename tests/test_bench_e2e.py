"""`watus bench e2e`: the statistics and goal checks on hand-made turn records, questions (text, pauses,
WAV files), which question a turn answers and which turns were cut off, preemptive hits and misses, the
writers (Markdown, JSONL, JSON summary, the waterfall PNG), the agent's metrics of a turn, and one real
short run of the whole benchmark with every process.

The hand-made records have round numbers so each figure of the goal checks can be checked by hand; the
real run checks that the pieces meet: piper's questions (one with a mid-sentence pause) reach the agent
through the audio service's file microphone in all three pipelines, the audio events place each turn's
utterance, and the turn records become a report and a summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from tests.helpers import free_port
from watus.agent.app import AgentMetrics
from watus.agent.turnlog import TurnRecord
from watus.bench import update_markdown_section
from watus.bench.e2e import PlaybackCutter, _questions, closest_question, e2e
from watus.bench.e2e_chart import waterfall_chart
from watus.bench.e2e_events import Utterance, UtteranceLog
from watus.bench.e2e_goals import goal_checks
from watus.bench.e2e_questions import (
    LONG_QUESTIONS,
    PAUSED_QUESTIONS,
    QuestionError,
    join_with_pauses,
    parse_question,
    voiced_bounds,
)
from watus.bench.e2e_report import (
    KNOWN_MODES,
    MODES,
    E2EConfig,
    E2EResult,
    ModeTelemetry,
    critical_parts,
    mode_stats,
    preemptive_lead_ms,
    since_speech_end,
    since_t0,
    vad_tail_ms,
)
from watus.bench.e2e_run import MODE_ENV, audio_settings
from watus.bench.e2e_turns import (
    ENDED_AT_PAUSE,
    SHORTER,
    hit_rate,
    label_pass,
    mic_slots,
    pass_progress,
    preemption,
    questions_spoken_over,
    shorter_than_question,
    slot_of,
)
from watus.bench.e2e_workload import make_mic_folder
from watus.bench.e2e_writers import chart_link, json_summary, render_markdown, write_json_summary, write_jsonl
from watus.core import metrics as prom
from watus.core.telemetry import MeanMax, TelemetrySummary
from watus.core.wire.audio import (
    AudioEvent,
    Interrupted,
    PlaybackFinished,
    PlaybackStarted,
    SpeculativeTranscript,
    SpeechResumed,
    SpeechStarted,
    Transcript,
    TurnEnd,
)

MS = 1_000_000  # ns


def record(mode: str, offsets_ms: dict[str, float], tail_ms: float = 500.0, **extra: Any) -> dict[str, Any]:
    """A turn record as the agent writes it, with each stage `offsets_ms` after t0 (= 10 s) and the last
    speech frame captured `tail_ms` before t0."""
    t0 = 10_000 * MS
    t_ns = {"speech_end": t0, **{k: t0 + int(v * MS) for k, v in offsets_ms.items()}}
    e2e = offsets_ms.get("playback_start")
    return {"turn_id": f"{mode}-{len(offsets_ms)}-{e2e}", "session_id": "s", "transcript": "What is your name?",
            "reply": "I am Watus.", "interrupted": False, "error": None, "mode": mode, "t_ns": t_ns,
            "audio_ms": {"end_silence": tail_ms - 12, "asr": 300.0, "eos_to_transcript": offsets_ms.get("asr_done")},
            "speech_end_captured_ns": t0 - int(tail_ms * MS), "e2e_ms": e2e,
            "perceived_ms": None if e2e is None else e2e + tail_ms, "preemptive": None, "preemptive_misses": 0,
            "warmup": False, "question": "What is your name?", **extra}


def preemptive_hit(perceived: float, misses: int = 0, tail_ms: float = 520.0, **extra: Any) -> dict[str, Any]:
    """A confirmed preemptive reply: started from the speculative transcript 250 ms after the captured end of
    speech, its stages before t0, its audio released `perceived` ms after the captured end."""
    t0 = 10_000 * MS
    end = t0 - int(tail_ms * MS)
    at = {"scene_fetched": 255, "llm_first_token": 450, "first_sentence": 600, "tts_first_audio": 700,
          "playback_start": perceived, "playback_end": perceived + 3000}
    rec = record("preemptive", {}, tail_ms, **extra)
    rec["t_ns"] = {"speech_end": t0, "asr_done": t0 + 4 * MS, **{k: end + int(v * MS) for k, v in at.items()}}
    rec.update(turn_id=f"hit-{perceived}-{misses}", e2e_ms=perceived - tail_ms, perceived_ms=perceived,
               preemptive="hit", preemptive_misses=misses, speculative_ns=end + 250 * MS)
    return rec


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
    # The VAD tail is measured (t0 − the captured end); the audio service's own figure only without it.
    assert vad_tail_ms(rec) == pytest.approx(500) and rec["audio_ms"]["end_silence"] == 488
    assert vad_tail_ms({**rec, "speech_end_captured_ns": None}) == pytest.approx(488)
    assert critical_parts({**rec, "audio_ms": {}, "speech_end_captured_ns": None}) is None  # no VAD tail at all
    assert since_t0({"t_ns": {}}) == {}
    # From the true end of speech: t0 is the tail, every stage 500 ms later than after t0.
    assert since_speech_end(rec) == pytest.approx({"speech_end": 500, "asr_done": 600, "scene_fetched": 610,
                                                   "llm_first_token": 800, "first_sentence": 1100,
                                                   "tts_first_audio": 1490, "playback_start": 1500,
                                                   "playback_end": 4500})


def test_a_preemptive_hit_from_the_true_end_of_speech() -> None:
    hit = preemptive_hit(900.0)
    at = since_speech_end(hit)
    assert at["speculative"] == pytest.approx(250) and at["speech_end"] == pytest.approx(520)
    assert at["scene_fetched"] < at["speech_end"] < at["playback_start"] == pytest.approx(900)
    assert since_t0(hit)["scene_fetched"] == pytest.approx(255 - 520)  # before t0: prepared during the tail
    assert critical_parts(hit) is None  # its stages overlap the tail by design


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
    vs_seq, vs_sum, *preemptive_goals = goal_checks(stats)
    assert [g.verdict for g in preemptive_goals] == ["N/A", "N/A", "N/A"]  # no preemptive mode ran
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
    vs_seq, vs_sum, *_ = goal_checks(stats)
    assert vs_seq.verdict == "FAIL" and vs_seq.passed is False
    assert vs_sum.verdict == "FAIL"  # 2501 / (500 + 700) = 2.08 > 1.2
    only = goal_checks({"streaming": mode_stats(slow, "streaming")})
    assert only[0].verdict == "N/A" and "sequential" in only[0].figures
    assert only[1].verdict == "FAIL"
    assert [g.verdict for g in goal_checks({})] == ["N/A"] * 5


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


def test_long_requests_and_incremental_asr_of_a_run(tmp_path: Path) -> None:
    """`--long N` adds the built-in long requests after the questions; `--[no-]asr-incremental` sets the
    audio service of every mode; the report says which, and the turn table shows the last ASR pass and
    what was settled while the person spoke."""
    assert all(len(parse_question(q).text.split()) >= 18 for q in LONG_QUESTIONS)  # 5-7 s of piper
    off = E2EConfig(asr_incremental=False)
    for mode in ("sequential", "streaming", "preemptive"):
        assert audio_settings(off, mode)["WATUS_AUDIO_ASR_INCREMENTAL"] == "false"
        assert "WATUS_AUDIO_ASR_INCREMENTAL" not in audio_settings(E2EConfig(), mode)  # the service's own
    assert audio_settings(off, "preemptive")["WATUS_AUDIO_TURN_END"] == "model"
    long_turns = [{**streaming(100, 110, 300, 600, 990, 1000 + i),
                   "audio_ms": {"end_silence": 488, "asr": 60.0 + i, "asr_settled": 4000.0 + 500 * i}}
                  for i in range(3)]
    s = mode_stats([*long_turns, streaming(100, 110, 300, 600, 990, 1000)], "streaming")
    assert s.asr is not None and (s.asr.n, s.asr.p50) == (4, pytest.approx(61.5))
    assert s.settled_s is not None and (s.settled_s.n, s.settled_s.p50) == (3, pytest.approx(4.5))
    result = result_of(long_turns, modes=("streaming",), asr_incremental=True,
                       questions=(*E2EConfig.questions, *LONG_QUESTIONS[:2]))
    text = render_markdown(result)
    assert "transcribing long utterances while they are spoken: on" in text
    assert "| 61 / 62 | 3 turns, p50 4.5 s |" in text
    summary = json_summary(result)
    assert summary["config"]["asr_incremental"] is True
    assert summary["modes"]["streaming"]["asr_settled_s"] == {"p50": 4.5, "p95": pytest.approx(4.95, abs=0.06), "n": 3}
    app = typer.Typer()
    app.command()(e2e)
    for args in (["--long", "2", "--no-asr-incremental"], ["--asr-incremental"]):  # accepted; stops at --modes
        out = CliRunner().invoke(app, [*args, "--modes", "nosuch", "--no-vision"])
        assert out.exit_code == 2 and "modes are" in out.output, out.output


def test_preemptive_replies_with_the_silence_tail_on_request(turns: list[dict[str, Any]]) -> None:
    """`preemptive-tail`: the agent's preemptive replies with the turn ended as streaming ends it; not a
    default mode, and counted as preemptive in the tables."""
    assert "preemptive-tail" in KNOWN_MODES and "preemptive-tail" not in MODES
    assert MODE_ENV["preemptive-tail"][0]["WATUS_AGENT_PREEMPTIVE"] == "true"
    assert audio_settings(E2EConfig(), "preemptive-tail")["WATUS_AUDIO_TURN_END"] == "silence"
    tail = [{**preemptive_hit(530.0 + i), "mode": "preemptive-tail"} for i in range(3)]
    tail.append({**record("streaming", {"asr_done": 100, "playback_start": 900}), "mode": "preemptive-tail"})
    s = mode_stats(tail, "preemptive-tail")
    assert (s.hits, s.not_preempted) == (3, 1) and s.perceived is not None and s.perceived.p50 == pytest.approx(531.5)
    text = render_markdown(result_of(tail, modes=("streaming", "preemptive-tail")))
    assert "**preemptive-tail** is the same held reply" in text
    assert "**preemptive-tail**" not in render_markdown(result_of(turns))


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


# --- questions, utterances, cut-offs and preemption -----------------------------------------------------------

WARMUP = "Hi Watus, are you there?"
PLAIN = "What is your name?"
PAUSED = "Could you tell me, <500ms> what you see?"


def test_question_specs(tmp_path: Path) -> None:
    plain = parse_question("  What do you see? ")
    assert (plain.text, plain.parts, plain.pauses_ms, plain.paused, plain.wav) == (
        "What do you see?", ("What do you see?",), (), False, None)
    q = parse_question(PAUSED)
    assert q.parts == ("Could you tell me,", "what you see?") and q.pauses_ms == (500,) and q.paused
    assert q.text == "Could you tell me, what you see?" and q.label == "Could you tell me, ‹500 ms› what you see?"
    assert parse_question("a <350 MS> b <600ms> c").pauses_ms == (350, 600)
    assert all(350 <= parse_question(x).pauses_ms[0] <= 600 for x in PAUSED_QUESTIONS)
    wav = tmp_path / "mine.wav"
    sf.write(wav, np.zeros(800, np.float32), 8000)
    own = parse_question(str(wav))
    assert (own.wav, own.text, own.label, own.parts, own.paused) == (wav, None, "mine.wav", (), False)
    (tmp_path / "mine.txt").write_text("Where is the kitchen?\n")
    assert parse_question(str(wav)).text == "Where is the kitchen?"  # the words said, for the transcript checks
    for bad in ("  ", "<500ms> what?", "a <50ms> b", str(tmp_path / "missing.wav")):
        with pytest.raises(QuestionError):
            parse_question(bad)


def test_questions_option_takes_wav_files_and_pauses(tmp_path: Path) -> None:
    wav = tmp_path / "q.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16_000)
    assert _questions([str(wav), "Hi <400ms> there"]) == (str(wav), "Hi <400ms> there")
    with pytest.raises(typer.BadParameter):
        _questions([str(tmp_path / "nope.wav")])
    with pytest.raises(typer.BadParameter):
        _questions(["Hi <20ms> there"])


def test_pieces_joined_by_exactly_the_pause() -> None:
    rate = 16_000

    def quiet(ms: int) -> np.ndarray:
        return np.zeros(rate * ms // 1000, np.float32)

    a = np.concatenate([quiet(100), np.full(8000, 0.3, np.float32), quiet(250)])
    b = np.concatenate([quiet(150), np.full(4000, -0.3, np.float32), quiet(200)])
    joined = join_with_pauses([a, b], [500], rate)
    # The silence before the first piece and after the last is kept; the join's is exactly 500 ms.
    assert len(joined) == 1600 + 8000 + 8000 + 4000 + 3200
    assert not joined[:1600].any() and (joined[1600:9600] == 0.3).all()
    assert not joined[9600:17600].any() and (joined[17600:21600] == -0.3).all() and not joined[21600:].any()
    assert voiced_bounds(joined) == (1600, 21600) and voiced_bounds(quiet(10)) == (0, 0)
    with pytest.raises(ValueError):
        join_with_pauses([a, b], [], rate)


def test_wav_questions_are_used_as_they_are(tmp_path: Path) -> None:
    rate = 22_050  # stereo at another rate: mixed to mono and resampled to 16 kHz
    wav = tmp_path / "own.wav"
    sf.write(wav, np.stack([np.full(rate, 0.2, np.float32), np.full(rate, 0.4, np.float32)], axis=1), rate)
    q = parse_question(str(wav))
    assert make_mic_folder(tmp_path / "run", [q, q], lead_in_s=0.5) == pytest.approx([1.0, 1.0], abs=1e-3)
    files = sorted((tmp_path / "run" / "mic").glob("*.wav"))
    assert len(files) == 2
    first, sr = sf.read(files[0], dtype="float32")
    assert sr == 16_000 and first.ndim == 1 and len(first) == pytest.approx(8000 + 16_000, abs=2)
    assert not first[:8000].any() and first[16_000] == pytest.approx(0.3, abs=0.01)  # lead-in, then the mix


def test_piper_questions_are_the_same_audio_in_every_run_unless_asked_to_vary(tmp_path: Path) -> None:
    """Two runs of the benchmark hear the same samples (turn-by-turn comparable); `--voice-variation` gives
    piper's sampling noise back (a new rendition in each benchmark process)."""
    q = parse_question("Could you tell me, <400ms> what you see?")

    def spoken(run: str, variation: bool) -> np.ndarray:
        make_mic_folder(tmp_path / run, [q], lead_in_s=0.0, variation=variation)
        (wav,) = (tmp_path / run / "mic").glob("*.wav")
        return np.asarray(sf.read(wav, dtype="float32")[0])

    a, b = spoken("a", False), spoken("b", False)
    assert len(a) > 16_000 and np.array_equal(a, b)
    varied = spoken("c", True)
    assert len(varied) != len(a) or not np.array_equal(varied, a)


def test_slots_of_the_microphone_stream() -> None:
    slots = mic_slots([2.0, 3.0], lead_in_s=8.0, gap_s=16.0)
    assert [(s.start_s, s.speech_start_s, s.speech_end_s, s.end_s) for s in slots] == [(0, 8, 10, 26),
                                                                                        (26, 26, 29, 45)]
    assert [slot_of(slots, x) for x in (8.2, 25.9, 26.0, 44.9, 45.0, -1.0)] == [0, 0, 1, 1, None, None]


def test_a_transcript_shorter_than_its_question() -> None:
    question = "Could you tell me, what you see?"
    assert not shorter_than_question("Could you tell me what you see", question)
    assert not shorter_than_question("Could you tell me what you sea", question)  # misheard, not cut off
    assert shorter_than_question("Could you tell me", question)  # 4 of 7 words
    assert shorter_than_question("Could you tell me what you", question)  # a strict prefix (6 of 7)
    assert not shorter_than_question("anything", None)  # a WAV question without its words


def _utterance(turn_id: str, start_s: float, text: str, **extra: Any) -> Utterance:
    return Utterance(turn_id, started_s=start_s, transcript=text, audio_start_s=start_s,
                     audio_end_s=start_s + 1.0, **extra)


def _rec(turn_id: str, transcript: str, **extra: Any) -> dict[str, Any]:
    return {"turn_id": turn_id, "transcript": transcript, "t_ns": {"speech_end": 1}, "e2e_ms": 800.0, **extra}


SEQUENCE = [parse_question(WARMUP), parse_question(PLAIN), parse_question(PAUSED)]
SLOTS = mic_slots([1.5, 1.2, 2.4], lead_in_s=8.0, gap_s=16.0)  # starts 0, 25.5, 42.7; speech ends 9.5, 26.7, 45.1


def test_turns_placed_by_their_utterance_and_cut_offs() -> None:
    utterances = {"u0": _utterance("u0", 8.1, WARMUP), "u1": _utterance("u1", 25.6, PLAIN),
                  # The paused question heard as two turns: the first ended at the mid-sentence pause.
                  "u2a": _utterance("u2a", 42.8, "Could you tell me,"),
                  "u2b": _utterance("u2b", 44.2, "what you see?", during_playback=True,
                                    turn_end={"decision": "silence", "probability": None, "silence_ms": 512.0,
                                              "model_ms": None})}
    records = [_rec("u0", WARMUP), _rec("u1", PLAIN), _rec("u2b", "what you see?"), _rec("u2a", "Could you tell me,"),
               _rec("typed", "hello", source="text")]  # records come in the order turns finished
    turns = {t["turn_id"]: t for t in label_pass(records, utterances, SLOTS, SEQUENCE, warmup=1)}
    assert [turns[k]["index"] for k in ("u0", "u1", "u2a", "u2b", "typed")] == [0, 1, 2, 2, None]
    assert turns["u0"]["warmup"] and not turns["u1"]["warmup"] and turns["u2a"]["paused"]
    assert turns["u2a"]["cut_off"] == ENDED_AT_PAUSE and turns["u2b"]["cut_off"] is None
    assert turns["u1"]["cut_off"] is None and turns["u1"]["question_wer"] == 0.0
    assert turns["u2b"]["question"] == "Could you tell me, ‹500 ms› what you see?"
    assert turns["u2b"]["utterance"]["turn_end"]["decision"] == "silence" and "utterance" not in turns["typed"]
    # The second piece began while the reply to the first played: part of the cut-off, not a question spoken over.
    assert questions_spoken_over(utterances, SLOTS) == 0
    assert questions_spoken_over({**utterances, "u1": _utterance("u1", 25.6, PLAIN, during_playback=True)},
                                 SLOTS) == 1
    # One transcript that says clearly less than the question: cut off too.
    short = label_pass([_rec("u1", "What is")], {"u1": _utterance("u1", 25.6, "What is")}, SLOTS, SEQUENCE, 1)
    assert short[0]["cut_off"] == SHORTER
    # Without any audio event, the records are the questions in order (as before the events were followed).
    in_order = label_pass([_rec("a", WARMUP), _rec("b", PLAIN)], {}, SLOTS, SEQUENCE, 1)
    assert [(t["index"], t["warmup"], t["cut_off"]) for t in in_order] == [(0, True, None), (1, False, None)]


def test_pass_progress() -> None:
    heard = {"u0": _utterance("u0", 8.1, WARMUP), "u1": _utterance("u1", 25.6, PLAIN),
             "u2": _utterance("u2", 42.8, "Could you tell me, what you see?")}
    records = [_rec("u0", WARMUP), _rec("u1", PLAIN)]
    assert pass_progress(records, heard, SLOTS, 60.0) == (2, False)  # a transcript without its record yet
    records.append(_rec("u2", "Could you tell me, what you see?"))
    assert pass_progress(records, heard, SLOTS, 46.0) == (3, False)  # a second piece could still come
    assert pass_progress(records, heard, SLOTS, 48.5) == (3, True)
    assert pass_progress(records, heard, SLOTS, None) == (3, True)
    unheard = {k: v for k, v in heard.items() if k != "u2"}
    assert pass_progress(records[:2], unheard, SLOTS, 50.0) == (2, False)
    assert pass_progress(records[:2], unheard, SLOTS, SLOTS[-1].end_s) == (2, True)  # the stream has played
    assert pass_progress(records[:2], {}, SLOTS, None) == (2, False)  # no events: one record per question
    assert pass_progress(records, {}, SLOTS, None) == (3, True)


def test_utterances_from_typed_audio_events() -> None:
    base = 50_000 * MS
    events: list[AudioEvent] = [
        SpeechStarted(t_ns=base, turn_id="u1", audio_s=8.1, captured_ns=base - 200 * MS),
        SpeculativeTranscript(t_ns=base + 1500 * MS, turn_id="u1", text="Could you tell me,", pause_ns=base + 1400 * MS,
                              speech_end_captured_ns=base + 1200 * MS, asr_ms=60.0),
        SpeechResumed(t_ns=base + 1700 * MS, turn_id="u1"),
        SpeculativeTranscript(t_ns=base + 2900 * MS, turn_id="u1", text="Could you tell me, what you see?",
                              pause_ns=base + 2800 * MS, speech_end_captured_ns=base + 2600 * MS, asr_ms=70.0),
        TurnEnd(t_ns=base + 3650 * MS, turn_id="u1", decision="incomplete", probability=0.02, silence_ms=1010.0,
                model_ms=40.0),
        Transcript(t_ns=base + 3660 * MS, turn_id="u1", text="Could you tell me, what you see?",
                   t0_ns=base + 3650 * MS, speech_started_ns=base, speech_end_captured_ns=base + 2600 * MS,
                   audio_start_s=8.1, audio_end_s=10.9),
        SpeechStarted(t_ns=base + 9000 * MS, audio_s=17.0, captured_ns=base + 8800 * MS, during_playback=True),
    ]
    with PlaybackCutter(f"http://127.0.0.1:{free_port()}", after_s=0) as cutter:
        for ev in events:
            cutter.feed(ev.model_dump_json())
    log = cutter.utterances
    assert log.stream_start_ns == base - 200 * MS - 8_100 * MS
    u = log.snapshot()["u1"]
    assert (u.start_s, u.audio_end_s, u.resumed) == (8.1, 10.9, 1)
    assert [text for _, text in u.speculative] == ["Could you tell me,", "Could you tell me, what you see?"]
    assert u.turn_end == {"decision": "incomplete", "probability": 0.02, "silence_ms": 1010.0, "model_ms": 40.0}
    assert u.transcript == "Could you tell me, what you see?" and not u.during_playback
    assert set(log.snapshot()) == {"u1"}  # an utterance without an id is only the stream's clock
    standalone = UtteranceLog()
    standalone.on_event(events[0])
    assert standalone.snapshot()["u1"].started_captured_ns == base - 200 * MS
    # The speculative transcript a hit started from (same words as the record's).
    placed = label_pass([_rec("u1", "Could you tell me, what you see?", preemptive="hit")], {"u1": u}, SLOTS,
                        SEQUENCE, 0)
    assert placed[0]["speculative_ns"] == base + 2900 * MS and placed[0]["utterance"]["speculative"] == 2


@pytest.fixture
def preemptive_turns() -> list[dict[str, Any]]:
    """Preemptive: 4 hits (one on a cut-off piece), 1 miss, one turn not preempted; streaming alongside."""
    paused: dict[str, Any] = {"paused": True, "question": "Could you tell me, ‹500 ms› what you see?"}
    silence: dict[str, Any] = {"turn_end": {"decision": "silence"}}
    return [
        preemptive_hit(900, run=1, index=1, utterance={"turn_end": {"decision": "incomplete"}}),
        preemptive_hit(1000, misses=1, run=1, index=2, utterance=silence, **paused),
        preemptive_hit(700, run=2, index=2, cut_off=ENDED_AT_PAUSE, utterance=silence, **paused),
        preemptive_hit(1100, run=2, index=2, utterance=silence, **paused),
        record("preemptive", {"asr_done": 50, "scene_fetched": 60, "llm_first_token": 300, "first_sentence": 500,
                              "tts_first_audio": 790, "playback_start": 800}, run=2, index=1),
        record("preemptive", {"asr_done": 50}, run=1, index=0, warmup=True, preemptive_misses=3),  # warm-up
        {**streaming(100, 110, 300, 600, 1590, 1600), "run": 1, "index": 1},
        {**streaming(100, 110, 300, 600, 1590, 1610), "run": 2, "index": 1},
        {**streaming(100, 110, 300, 600, 1590, 1620), "run": 1, "index": 2, **paused},
    ]


def test_preemption_and_cut_offs_in_the_mode_stats(preemptive_turns: list[dict[str, Any]]) -> None:
    s = mode_stats(preemptive_turns, "preemptive")
    assert (s.turns, s.timed, s.cut_off_turns) == (5, 4, 1)  # the cut-off piece counts, but not for latency
    # Perceived 900, 1000, 1100 (hits) and 800 + the 500 ms tail (the turn not preempted).
    assert s.perceived is not None and (s.perceived.n, s.perceived.p50) == (4, 1050)
    assert s.e2e is not None and s.e2e.p50 == pytest.approx(530)  # 380, 480, 580 (hits: − the 520 ms tail), 800
    assert (s.hits, s.misses, s.hit_rate) == (4, 1, 0.8)  # the warm-up's misses are left out
    assert (s.paused_hits, s.paused_misses, s.not_preempted) == (3, 1, 1)
    assert (s.questions, s.cut_off_questions, s.paused_questions, s.paused_cut_off) == (4, 1, 2, 1)
    assert s.turn_ends == {"incomplete": 1, "silence": 3}
    # The timed hits started from a speculative transcript ready 250 ms after the captured end, t0 at 520 ms.
    assert s.lead is not None and (s.lead.n, s.lead.p50) == (3, pytest.approx(270))
    assert preemptive_lead_ms(preemptive_turns[4]) is None  # not a hit
    assert mode_stats(preemptive_turns, "streaming").not_preempted == 0  # only the preemptive mode tries
    assert preemption(preemptive_turns) == (4, 4) and hit_rate(0, 0) is None and hit_rate(1, 3) == 0.25


def test_preemptive_goal_checks(preemptive_turns: list[dict[str, Any]]) -> None:
    stats = {m: mode_stats(preemptive_turns, m) for m in ("streaming", "preemptive")}
    checks = {g.name: g for g in goal_checks(stats, expected_paused=2)}
    # 1050 / 2110 (streaming e2e 1600-1620 + the 500 ms tail) = 0.498: the goal, just met.
    vs = checks["preemptive vs streaming (perceived)"]
    assert vs.verdict == "PASS" and "1,050 / 2,110 ms = 0.498×" in vs.figures and "hit rate 80%" in vs.figures
    cut = checks["no cut-offs on paused questions"]
    assert cut.verdict == "FAIL" and cut.figures.startswith("1 of 2 cut off (1 cut-off turns in all)")
    machine = checks["perceived on this machine"]
    assert machine.verdict in ("FAIL", "INCONCLUSIVE") and "p50 1,050 ms" in machine.figures
    assert "streaming 2,110" in machine.figures
    # Without the cut-off: none of the paused questions cut off, unless one of them got no turn at all.
    whole = [t for t in preemptive_turns if not t.get("cut_off")]
    stats = {m: mode_stats(whole, m) for m in ("streaming", "preemptive")}
    assert {g.name: g for g in goal_checks(stats, 2)}["no cut-offs on paused questions"].verdict == "PASS"
    assert {g.name: g for g in goal_checks(stats, 3)}["no cut-offs on paused questions"].verdict == "INCONCLUSIVE"
    # A slow preemptive mode, well measured: FAIL against streaming and against the 1 s aim.
    slow = [preemptive_hit(1500 + i) for i in range(5)] + [{**streaming(100, 110, 300, 600, 1590, 1600 + i)}
                                                           for i in range(5)]
    stats = {m: mode_stats(slow, m) for m in ("streaming", "preemptive")}
    checks = {g.name: g for g in goal_checks(stats)}
    assert checks["preemptive vs streaming (perceived)"].verdict == "FAIL"
    assert checks["perceived on this machine"].verdict == "FAIL"
    assert checks["no cut-offs on paused questions"].verdict == "N/A"  # no paused question was asked
    fast = {"preemptive": mode_stats([preemptive_hit(600 + 10 * i) for i in range(5)], "preemptive")}
    assert {g.name: g for g in goal_checks(fast)}["perceived on this machine"].verdict == "PASS"


def test_agent_metrics_of_a_turn() -> None:
    metrics = AgentMetrics()
    metrics.observe(TurnRecord(turn_id="t1", session_id="s", transcript="Hi", preemptive="hit",
                               speech_end_captured_ns=1_000 * MS,
                               t_ns={"speech_end": 1_500 * MS, "playback_start": 1_900 * MS}))
    metrics.observe(TurnRecord(turn_id="t2", session_id="s", transcript="Hi", preemptive_misses=2))
    body = prom.render(metrics.registry)[0].decode()
    assert "watus_turn_perceived_seconds_count 1.0" in body and "watus_turn_perceived_seconds_sum 0.9" in body
    assert 'watus_preemptive_total{outcome="hit"} 1.0' in body
    assert 'watus_preemptive_total{outcome="miss"} 2.0' in body
    assert "watus_turn_e2e_seconds_count 1.0" in body


# --- the writers --------------------------------------------------------------------------------------------


def test_markdown_jsonl_and_chart(turns: list[dict[str, Any]], tmp_path: Path) -> None:
    result = result_of(turns, modes=("streaming", "sequential"))
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
    assert "![Stages of each turn from the true end of speech, per mode](e2e_waterfall.png)" in text
    assert "| streaming | 3 | 1,100 | 1,190 | 1,600 | 1,690 | 0 | 0 of 0 | 0 of 0 | 0 / 0 | – | – | – | – |" in text
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
    assert summary["streaming"]["perceived_ms"]["p50"] == 1600
    assert [x["verdict"] for x in lines if x["type"] == "goal"] == ["PASS", "PASS", "N/A", "N/A", "N/A"]
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


def test_report_summary_and_chart_with_preemption(preemptive_turns: list[dict[str, Any]], tmp_path: Path) -> None:
    result = result_of(preemptive_turns, modes=("streaming", "preemptive"), runs=2, questions=(PLAIN,),
                       paused_questions=(PAUSED,))
    result.telemetry = [ModeTelemetry("preemptive", 1, TelemetrySummary("psutil", 3, 1.5), 35.0)]
    text = render_markdown(result, "e2e_waterfall.png")
    assert "2 questions (1 with a mid-sentence pause; piper's questions are the same audio in every run)" in text
    assert "**perceived** = playback start" in text
    assert "| preemptive | 4 | 530 |" in text
    assert "| 1 of 4 | 1 of 2 | 4 / 1 | 80% | 75% | 1 | 270 | incomplete 1, silence 3 |" in text
    # Per question: perceived of each pass, the cut-off and the preemption marked.
    assert ("| 2 | Could you tell me, ‹500 ms› what you see? | 2,120 "
            "| 1,000 hit miss×1 · cut off (2 turns) → 1,100 hit |") in text
    assert "| no cut-offs on paused questions |" in text and "**FAIL**" in text

    summary = json_summary(result)
    pre = summary["modes"]["preemptive"]
    assert pre["perceived_ms"] == {"p50": 1050.0, "p95": 1270.0, "n": 4} and pre["e2e_ms"]["p50"] == 530.0
    assert (pre["turns"], pre["timed"], pre["cut_off_turns"], pre["paused_cut_off"]) == (5, 4, 1, 1)
    assert pre["preemptive"] == {"hits": 4, "misses": 1, "hit_rate": 0.8, "paused_hits": 3, "paused_misses": 1,
                                 "not_preempted": 1, "started_before_t0_ms": {"p50": 270.0, "p95": 270.0, "n": 3}}
    assert pre["other_cpu_percent"] == [35.0] and summary["modes"]["streaming"]["preemptive"]["hit_rate"] is None
    goals = {g["name"]: g["verdict"] for g in summary["goals"]}
    assert goals["no cut-offs on paused questions"] == "FAIL" and len(goals) == 5
    assert summary["config"]["paused_questions"] == [PAUSED]
    path = tmp_path / "out" / "e2e.json"
    write_json_summary(path, result)
    assert json.loads(path.read_text())["modes"]["preemptive"]["preemptive"]["hits"] == 4

    chart = waterfall_chart(result, tmp_path / "chart.png")
    assert chart.read_bytes()[:4] == b"\x89PNG" and chart.stat().st_size > 10_000


# --- one real run ---------------------------------------------------------------------------------------------


def test_real_run_every_mode(tmp_path: Path) -> None:
    """The whole benchmark through its command: LLM server, agent and audio per mode, no vision; a question
    with a mid-sentence pause, then a plain one (last, so no question can barge in on its reply)."""
    app = typer.Typer()
    app.command()(e2e)
    report = tmp_path / "docs" / "benchmarks.md"
    out = tmp_path / "results"
    summary_path = tmp_path / "summary.json"
    res = CliRunner().invoke(app, ["--questions", PAUSED, "--questions", PLAIN, "--paused", "0", "--runs", "1",
                                   "--warmup", "0", "--no-vision", "--gap", "10", "--playback-s", "1.5",
                                   "--max-tokens", "16", "--out-dir", str(out), "--report", str(report),
                                   "--json", str(summary_path)])
    assert res.exit_code == 0, res.output
    (jsonl,) = out.glob("e2e-*[0-9].jsonl")  # not the turn logs (e2e-<stamp>-<mode>-turns.jsonl)
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert lines[0]["errors"] == [], lines[0]["errors"]
    turns = [x for x in lines if x["type"] == "turn"]
    modes = {"sequential", "streaming", "preemptive"}
    assert {t["mode"] for t in turns} == modes
    for mode in modes:
        paused = [t for t in turns if t["mode"] == mode and t["index"] == 0]
        assert paused and all(t["paused"] and t["question"].startswith("Could you tell me,") for t in paused), paused
        assert all(t["utterance"]["start_s"] >= 8.0 for t in paused), paused  # placed by the audio events
        (rec,) = [t for t in turns if t["mode"] == mode and t["index"] == 1]
        assert rec["question"] == PLAIN and rec["question_wer"] <= 0.25, rec["transcript"]
        assert rec["error"] is None and rec["reply"] and rec["cut_off"] is None, rec
        assert 0 < rec["e2e_ms"] < rec["perceived_ms"] < 60_000, rec  # perceived adds the VAD tail
        assert rec["t_ns"]["speech_end"] <= rec["t_ns"]["asr_done"] <= rec["t_ns"]["playback_start"], rec
        assert rec["mode"] == mode and rec["run"] == 1 and not rec["warmup"] and not rec["paused"]
        assert rec["scene"]["error"]  # no vision: the agent knew it could not see
        if mode == "preemptive":
            # The end-of-turn model decided at the pauses; and unless it cut the question off (then the first
            # piece's reply was still under way at the second's pause), nothing was under way at the question's
            # last pause: its reply started there, confirmed by the final transcript (after any reply thrown
            # away at the mid-sentence pause).
            assert all(t["utterance"]["turn_end"]["probability"] is not None for t in paused), paused
            if not any(t["cut_off"] for t in paused):
                (whole,) = paused
                assert whole["preemptive"] == "hit" and whole["speculative_ns"] is not None, whole
        else:
            assert all(t["preemptive"] is None for t in [*paused, rec]) and rec["critical_ms"]["vad_tail"] > 0, rec
    summary = json.loads(summary_path.read_text())
    assert set(summary["modes"]) == modes
    assert summary["modes"]["preemptive"]["preemptive"]["hits"] >= 1
    assert summary["modes"]["streaming"]["perceived_ms"]["n"] >= 1
    text = report.read_text()
    assert "<!-- bench:e2e:start -->" in text and "### Goal check" in text
    assert "](e2e_waterfall.png)" in text and "### Questions (perceived ms per pass)" in text
    assert {(x["mode"], x["run"]) for x in lines if x["type"] == "telemetry"} == {(m, 1) for m in modes}
    assert (report.parent / "e2e_waterfall.png").read_bytes()[:4] == b"\x89PNG"
