"""`watus bench speech`: its WAV set, the ASR part with the real model, the report and its section.

The live parts (a service and real-time microphone playback, ~1.5 minutes) are what `watus bench speech`
runs; here the same code is exercised on the parts that take seconds.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from watus.bench import update_markdown_section
from watus.bench.speech import (
    SpeechBenchConfig,
    SpeechBenchResult,
    bench_asr,
    goal_checks,
    make_wavs,
    render_markdown,
    word_error_rate,
)


def test_word_error_rate() -> None:
    assert word_error_rate("Hello Watus, how are you?", "hello watus how are you") == 0.0
    assert word_error_rate("one two three four", "one too three") == 0.5
    assert word_error_rate("a b", "") == 1.0


def test_asr_part_and_report(tmp_path: Path) -> None:
    sentences = ("Hello Watus, what can you see?", "Please turn on the light in the kitchen.")
    wavs = make_wavs(tmp_path / "wavs", sentences, "asr", lead_in_s=0.5)
    audio, rate = sf.read(wavs[0][0])
    assert rate == 16000 and abs(len(audio) / rate - 0.5 - wavs[0][2]) < 0.01
    cfg = SpeechBenchConfig(asr_models=("tiny.en", str(tmp_path / "missing-model")), runs=2, warmup=0, threads=2)
    result = SpeechBenchResult(cfg, {"cpu": "test"}, "now")
    bench_asr(cfg, wavs, result, lambda _msg: None)
    rows = [r for r in result.rows if r["type"] == "asr"]
    assert len(rows) == 4 and all(r["latency_ms"] > 0 and 0 < r["rtf"] < 5 for r in rows)
    assert sum(r["wer"] for r in rows) / len(rows) <= 0.2
    assert len(result.errors) == 1 and "missing-model" in result.errors[0]  # reported, the rest still ran
    checks = {g.name: g for g in goal_checks(result)}
    assert checks["TTS first audio"].passed is None  # not measured in this run
    result.rows += [{"type": "eos", "variant": "speculative", "eos_to_transcript_ms": v, "speech_ms": 3000,
                     "asr_ms": 400, "speculative_used": True, "wer": 0.0} for v in (120.0, 180.0, 650.0)]
    assert goal_checks(result)[0].passed is True  # p50 180 ms
    text = render_markdown(result)
    assert "| tiny.en |" in text and "| speculative | 3 |" in text and "missing-model" in text
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nIntro.\n\n<!-- bench:llm:start -->\nLLM\n<!-- bench:llm:end -->\n")
    update_markdown_section(report, "speech", text)
    update_markdown_section(report, "speech", text)  # rewritten in place, not appended twice
    body = report.read_text()
    assert body.count("<!-- bench:speech:start -->") == 1 and "LLM" in body and "Intro." in body
