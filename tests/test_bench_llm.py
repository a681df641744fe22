"""`watus bench llm`: statistics, prompt calibration, the real llama.cpp targets, the report.

The in-process and llama.cpp-server targets run for real on the default SmolLM2 GGUF with short
lengths (loaded once per module). Only the Ollama protocol is exercised against a stand-in server,
because no Ollama exists on this machine.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from watus.bench import update_markdown_section
from watus.bench.llm import (
    BenchConfig,
    BenchResult,
    StreamTiming,
    TargetKind,
    bench_target,
    build_prompt,
    calibrate_prompt,
    goal_checks,
    goal_verdict,
    parse_target,
    render_markdown,
    write_jsonl,
)
from watus.bench.stats import difference_noise, percentile, ratio_noise, summarize

PROMPT, OUTPUT = 16, 8
SMALL = BenchConfig(runs=2, warmup=1, prompt_tokens=PROMPT, max_tokens=OUTPUT, concurrency=(1, 2),
                    concurrency_rounds=1, threads=2, telemetry_interval_s=0.05)


# --- statistics ---------------------------------------------------------------------------------------


def test_percentile_interpolates_linearly() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 95) == pytest.approx(3.85)  # numpy.percentile(values, 95)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_skips_missing_values() -> None:
    s = summarize([10.0, None, 12.0, 14.0, float("nan")])
    assert s is not None
    assert (s.n, s.mean, s.min, s.max, s.p50) == (3, 12.0, 10.0, 14.0, 12.0)
    assert s.stdev == pytest.approx(2.0) and s.cv == pytest.approx(2.0 / 12.0)
    assert summarize([None, None]) is None
    single = summarize([5.0])
    assert single is not None and single.stdev == 0.0 and single.p95 == 5.0


def test_noise_is_robust_and_shrinks_with_runs() -> None:
    a, b = summarize([100.0, 104.0, 96.0]), summarize([50.0, 51.0, 49.0])
    assert a is not None and b is not None and a.mad == 4.0
    few = ratio_noise(a, b)
    assert few == pytest.approx(2 * 1.2533 * 1.4826 * ((4 / 100) ** 2 + (1 / 50) ** 2) ** 0.5 / 3**0.5)
    a10, b10 = summarize([100.0, 104.0, 96.0] * 10), summarize([50.0, 51.0, 49.0] * 10)
    assert a10 is not None and b10 is not None
    assert 0 < ratio_noise(a10, b10) < few
    # One run stalled by another process barely moves the robust estimate.
    stalled = summarize([100.0, 104.0, 96.0, 101.0, 3.0])
    assert stalled is not None and ratio_noise(stalled, b) < 0.15
    assert difference_noise(a, b) == pytest.approx(2 * 1.2533 * 1.4826 * (16 + 1) ** 0.5 / 3**0.5)


@pytest.mark.parametrize(("value", "noise", "tolerate", "verdict"), [
    (1.02, 0.03, True, "PASS"), (0.98, 0.03, True, "PASS"), (0.98, 0.08, True, "INCONCLUSIVE"),
    (0.90, 0.03, True, "FAIL"), (0.98, 0.03, False, "INCONCLUSIVE"), (1.0, 0.0, False, "PASS"),
])
def test_verdicts(value: float, noise: float, tolerate: bool, verdict: str) -> None:
    assert goal_verdict(value, 1.0, noise, higher_is_better=True, tolerate=tolerate) == verdict


def test_ttft_verdict_lower_is_better() -> None:
    assert goal_verdict(12.0, 15.0, 2.0, higher_is_better=False, tolerate=False) == "PASS"
    assert goal_verdict(16.0, 15.0, 2.0, higher_is_better=False, tolerate=False) == "INCONCLUSIVE"
    assert goal_verdict(20.0, 15.0, 2.0, higher_is_better=False, tolerate=False) == "FAIL"


# --- pure pieces of the benchmark ----------------------------------------------------------------------


def test_parse_target() -> None:
    assert parse_target("openai:http://gpu:8000/v1").kind is TargetKind.openai
    assert parse_target("ollama:http://127.0.0.1:11434").value == "http://127.0.0.1:11434"
    assert parse_target("inprocess:default").kind is TargetKind.inprocess
    assert parse_target("llamacpp-server:").value == "default"
    s = parse_target("self:WATUS_LLM_MAX_CONCURRENT=4")
    assert s.kind is TargetKind.self_server and s.value == "WATUS_LLM_MAX_CONCURRENT=4"
    assert parse_target("self").kind is TargetKind.self_server
    for bad in ("vllm:http://x", "openai:localhost:8000", "openai"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_prompts_differ_from_the_first_character() -> None:
    prompts = [build_prompt(5, n) for n in range(1, 10)]
    assert len({p[0] for p in prompts}) == 9  # no prefix shared with the previous eight prompts
    assert build_prompt(5, 3) == build_prompt(5, 3)
    assert len(build_prompt(5, 3).split()) == 6 and build_prompt(0, 3).endswith(".")


def test_calibration_hits_the_goal_or_stays_below() -> None:
    nonces = itertools.count()
    words, n = calibrate_prompt(lambda p: len(p.split()) + 5, 40, nonces)  # 6 + words tokens
    assert n == 40 and words == 34
    # A tokenizer that counts two tokens per word cannot hit an odd goal: closest not above it.
    words, n = calibrate_prompt(lambda p: 2 * len(p.split()), 41, nonces)
    assert n == 40 and words == 19
    assert calibrate_prompt(lambda p: None, 41, nonces) == (35, None)


def test_stream_timing_formulas() -> None:
    st = StreamTiming(start=10.0, prompt_tokens=100, completion_tokens=11)
    st.text(10.2, "a")
    for i in range(1, 11):
        st.text(10.2 + 0.05 * i, "b")
    st.finish, st.end = 10.7, 10.71
    r = st.result("t", "run", 0)
    assert r.ttft_ms == pytest.approx(200.0)
    assert r.prefill_tps == pytest.approx(500.0)
    assert r.decode_tps == pytest.approx(10 / 0.5)
    assert r.wall_ms == pytest.approx(710.0) and r.chunks == 11


# --- real llama.cpp targets ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llamacpp_results(tmp_path_factory: pytest.TempPathFactory) -> BenchResult:
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(**{**SMALL.__dict__, "ours": "llamacpp-server:default"})
    result = BenchResult(config=cfg, machine={"cpu": "test"}, started="2025-01-01T00:00:00+00:00")
    for spec in ("inprocess:default", "llamacpp-server:default"):
        result.targets.append(bench_target(parse_target(spec), cfg, out))
    return result


def _check_runs(result: BenchResult, spec: str) -> None:
    target = next(t for t in result.targets if t.spec == spec)
    assert target.error is None, target.error
    assert len(target.runs) == SMALL.runs
    for run in target.runs:
        assert run.error is None
        assert run.prompt_tokens == PROMPT and run.completion_tokens == OUTPUT
        assert run.ttft_ms is not None and run.ttft_ms > 0
        assert run.prefill_tps is not None and run.prefill_tps > 0
        assert run.decode_tps is not None and run.decode_tps > 0
        assert run.wall_ms is not None and run.wall_ms >= run.ttft_ms
        assert run.chunks == OUTPUT  # one chunk per token: the timing is per token
    assert target.telemetry is not None and target.telemetry.samples >= 1


def test_inprocess_target(llamacpp_results: BenchResult) -> None:
    _check_runs(llamacpp_results, "inprocess:default")
    target = llamacpp_results.targets[0]
    assert target.concurrency == []  # no HTTP, no sweep


def test_llamacpp_server_target_with_sweep(llamacpp_results: BenchResult) -> None:
    _check_runs(llamacpp_results, "llamacpp-server:default")
    target = llamacpp_results.targets[1]
    assert [lvl.concurrency for lvl in target.concurrency] == [1, 2]
    two = target.concurrency[1]
    assert len(two.streams) == 2 and two.errors == 0
    assert all(s.completion_tokens == OUTPUT for s in two.streams)
    agg = two.summary()["aggregate_tps"]
    assert agg is not None and agg.p50 > 0


def test_missing_gguf_is_a_target_error(tmp_path: Path) -> None:
    result = bench_target(parse_target(f"inprocess:{tmp_path / 'none.gguf'}"), SMALL, tmp_path)
    assert result.error is not None and "not found" in result.error and result.runs == []


# --- report ---------------------------------------------------------------------------------------------


def test_report_section_keeps_the_rest_of_the_file(llamacpp_results: BenchResult, tmp_path: Path) -> None:
    report = tmp_path / "docs" / "benchmarks.md"
    update_markdown_section(report, "llm", "old figures")
    update_markdown_section(report, "vision", "vision figures")
    text = report.read_text()
    report.write_text("# Benchmarks\n\nIntro kept.\n\n" + text.split("\n\n", 2)[2] + "\nOutro kept.\n")

    update_markdown_section(report, "llm", render_markdown(llamacpp_results))
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nIntro kept.\n") and text.endswith("Outro kept.\n")
    assert "vision figures" in text and "old figures" not in text
    assert text.count("<!-- bench:llm:start -->") == 1 and text.count("<!-- bench:llm:end -->") == 1
    section = text.split("<!-- bench:llm:start -->")[1].split("<!-- bench:llm:end -->")[0]
    assert "| target | model | prompt tok |" in section
    assert "| `inprocess:default` |" in section and "| `llamacpp-server:default` |" in section
    assert "### Concurrency" in section and "### Telemetry" in section and "### Machine" in section
    assert "### Goal check" in section
    for name in ("decode vs in-process", "decode vs llama.cpp server", "TTFT added"):
        assert f"| {name} |" in section
    assert any(f"**{v}**" in section for v in ("PASS", "FAIL", "INCONCLUSIVE"))
    assert "**N/A**" not in section  # llamacpp-server stands in for our server here


def test_goal_checks_without_our_server(llamacpp_results: BenchResult) -> None:
    result = BenchResult(config=SMALL, machine={}, started="x", targets=llamacpp_results.targets)
    checks = goal_checks(result)
    assert [c.verdict for c in checks] == ["N/A"] * 3 and [c.passed for c in checks] == [None] * 3
    assert all(c.figures == "not measured: our server (self:)" for c in checks)


def test_goal_checks_state_the_figures(llamacpp_results: BenchResult) -> None:
    checks = {c.name: c for c in goal_checks(llamacpp_results)}
    decode = checks["decode vs in-process"]
    assert decode.verdict != "N/A" and "tok/s" in decode.figures and "×" in decode.figures
    assert "ms" in checks["TTFT added"].figures


def test_jsonl_has_runs_and_summaries(llamacpp_results: BenchResult, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl(path, llamacpp_results)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    types = [line["type"] for line in lines]
    assert types[0] == "meta" and types.count("summary") == 2 and types.count("goal") == 3
    assert types.count("run") == 2 * SMALL.runs + (1 + 2)  # timed runs + concurrency streams
    summary = next(line for line in lines if line["type"] == "summary")
    assert summary["metrics"]["decode_tps"]["p50"] > 0 and summary["telemetry"]["source"] == "psutil"


# --- Ollama protocol, against a stand-in (no Ollama on this machine) -------------------------------------


class _FakeOllama(BaseHTTPRequestHandler):
    """Streams `num_predict` NDJSON objects like Ollama's /api/generate, then its final timings."""

    requests: list[dict[str, Any]] = []  # noqa: RUF012 - shared on purpose: the test reads what was sent

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        body = json.dumps({"models": [{"name": "tiny:1b"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(req)
        n = req["options"]["num_predict"]
        prompt_tokens = len(req["prompt"].split()) + 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        for i in range(n):
            time.sleep(0.005)
            self.wfile.write(json.dumps({"model": "tiny:1b", "response": f" w{i}", "done": False}).encode() + b"\n")
            self.wfile.flush()
        final = {"model": "tiny:1b", "response": "", "done": True, "done_reason": "length",
                 "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 2_000_000,
                 "eval_count": n, "eval_duration": n * 5_000_000}
        self.wfile.write(json.dumps(final).encode() + b"\n")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def fake_ollama() -> Iterator[str]:
    _FakeOllama.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOllama)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_ollama_target_reports_client_and_server_figures(fake_ollama: str, tmp_path: Path) -> None:
    result = bench_target(parse_target(f"ollama:{fake_ollama}"), SMALL, tmp_path)
    assert result.error is None, result.error
    assert result.model == "tiny:1b" and result.ignore_eos is False
    assert result.calibrated_prompt_tokens == PROMPT
    for run in result.runs:
        assert run.prompt_tokens == PROMPT and run.completion_tokens == OUTPUT
        assert run.server_decode_tps == pytest.approx(200.0)  # eval_count / eval_duration
        assert run.server_prefill_tps == pytest.approx(PROMPT / 0.002)
        assert run.decode_tps is not None and 0 < run.decode_tps < 250
    sent = _FakeOllama.requests[-1]
    assert sent["raw"] is True and sent["stream"] is True
    assert sent["options"]["temperature"] == 0 and sent["options"]["num_predict"] == OUTPUT
    assert [lvl.concurrency for lvl in result.concurrency] == [1, 2]


# --- our own server, once it exists ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("trt_server.__main__") is None,
                    reason="trt_server has no __main__ yet")
def test_self_target_starts_and_stops_trt_server(tmp_path: Path) -> None:
    cfg = BenchConfig(**{**SMALL.__dict__, "concurrency": (2,), "startup_timeout_s": 120.0})
    result = bench_target(parse_target("self:WATUS_LLM_WARMUP=false"), cfg, tmp_path)
    assert result.error is None, result.error
    for run in result.runs:
        assert run.prompt_tokens == PROMPT and run.completion_tokens == OUTPUT
        assert run.decode_tps is not None and run.decode_tps > 0
    logs = list(tmp_path.glob("trt_server-*.log"))
    assert len(logs) == 1
