"""`watus bench degradation`: the drop detection, the reload loop, the report and the command.

Stand-in engines whose decode speed is set per load and per run check each verdict end to end: steady
(OK, exit 0), halving after each reload (the Ollama-on-Thor symptom, which no engine here shows:
DEGRADED, exit 3), and slower but scattered (INCONCLUSIVE, exit 4). The reload loop also runs for real on
the default SmolLM2 GGUF, loaded and freed by llama.cpp in this process, with tiny lengths (a few
seconds); how fast it is there depends on how busy this machine is, so that run checks that its verdict
is the drop check of the speeds it measured on the first load and the last reload.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from watus.bench import degradation as deg
from watus.bench.degradation import DegradationConfig, degradation, detect_drop, run_degradation_bench
from watus.bench.llm_types import StreamTiming

TINY = DegradationConfig(cycles=2, runs=2, warmup=1, prompt_tokens=16, max_tokens=8, threads=2,
                         telemetry_interval_s=0.05)


# --- drop detection -----------------------------------------------------------------------------------------


def test_a_drop_beyond_the_threshold_is_flagged() -> None:
    check = detect_drop([100.0, 101.0, 99.0, 100.5], [70.0, 71.0, 69.0, 70.5])
    assert check is not None
    assert check.drop == pytest.approx(0.2985, abs=1e-3) and check.degraded and check.verdict == "DEGRADED"
    assert "100.2 → 70.2 tok/s p50 (-29.9 %" in check.describe()


def test_small_drops_and_speedups_are_ok() -> None:
    for after in ([85.0, 86.0, 84.0], [120.0, 121.0, 119.0], [80.5, 80.5, 80.5]):
        check = detect_drop([100.0, 100.0, 100.0], after)
        assert check is not None and not check.degraded and check.verdict == "OK", after
    flagged, relaxed = detect_drop([100.0] * 3, [79.0] * 3), detect_drop([100.0] * 3, [79.0] * 3, threshold=0.25)
    assert flagged is not None and flagged.verdict == "DEGRADED"
    assert relaxed is not None and relaxed.verdict == "OK"


def test_a_noisy_drop_is_inconclusive() -> None:
    check = detect_drop([100.0, 60.0, 140.0], [75.0, 30.0, 120.0])
    assert check is not None and check.degraded and check.noise > check.drop - check.threshold
    assert check.verdict == "INCONCLUSIVE"


def test_nothing_to_compare() -> None:
    assert detect_drop([], [50.0]) is None
    assert detect_drop([None, None], [50.0]) is None
    assert detect_drop([0.0], [50.0]) is None


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        DegradationConfig(threshold=1.5)
    with pytest.raises(ValueError):
        DegradationConfig(cycles=0)
    with pytest.raises(ValueError, match="cannot be unloaded from here"):
        run_degradation_bench("openai:http://127.0.0.1:1", TINY, Path("unused"), None)


# --- the loop with stand-in engines of set speeds ----------------------------------------------------------


class _StandInDriver:
    """Decodes at the given tok/s, one per generation in turn (the warm-up takes the first); the prompt
    calibration (1 token) takes none."""

    model: str | None = "stand-in"
    ignore_eos = True
    supports_concurrency = False

    def __init__(self, speeds: Sequence[float]) -> None:
        self._speeds = itertools.cycle(speeds)
        self._first = speeds[0]

    def generate(self, prompt: str, max_tokens: int) -> StreamTiming:
        speed = self._first if max_tokens == 1 else next(self._speeds)
        first = 0.010
        return StreamTiming(start=0.0, first=first, last=first + (max_tokens - 1) / speed,
                            finish=first + (max_tokens - 1) / speed, end=first + max_tokens / speed,
                            chunks=max_tokens, prompt_tokens=len(prompt.split()) + 1, completion_tokens=max_tokens)

    def close(self) -> None:
        pass


def _stand_in(monkeypatch: pytest.MonkeyPatch, per_load: list[Sequence[float]]) -> list[int]:
    """Make the benchmark load stand-in engines, the n-th load decoding at `per_load[n]`; returns the loads."""
    loads: list[int] = []

    @contextlib.contextmanager
    def fake_open_target(spec: Any, cfg: Any, log_dir: Path) -> Iterator[_StandInDriver]:
        loads.append(len(loads))
        yield _StandInDriver(per_load[min(loads[-1], len(per_load) - 1)])

    monkeypatch.setattr(deg, "open_target", fake_open_target)
    return loads


def test_a_slowing_engine_is_reported_degraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = _stand_in(monkeypatch, [[100.0], [50.0], [25.0]])
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nprose that stays\n")
    cfg = DegradationConfig(cycles=2, runs=3, prompt_tokens=20, max_tokens=11, measure_every=False,
                            telemetry_interval_s=0.05)
    result = run_degradation_bench("self:", cfg, tmp_path / "out", report)
    assert len(loads) == 3 and [c.measured for c in result.cycles] == [True, False, True]
    assert result.prompt_tokens == 20
    assert result.cycles[0].decode_tps() == pytest.approx([100.0] * 3)
    assert result.cycles[2].decode_tps() == pytest.approx([25.0] * 3)
    assert result.check is not None and result.check.verdict == "DEGRADED"
    assert result.check.drop == pytest.approx(0.75)
    assert result.cycles[0].memory_loaded is not None and result.cycles[2].memory_unloaded is not None

    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nprose that stays\n")
    section = text[text.index("<!-- bench:degradation:start -->"):text.index("<!-- bench:degradation:end -->")]
    assert "| first load |" in section and "| 100.0 | 1.00× |" in section and "| 25.0 | 0.25× |" in section
    assert "**DEGRADED**: decode 100.0 → 25.0 tok/s p50 (-75.0 %" in section

    assert result.jsonl_path is not None
    records = [json.loads(line) for line in result.jsonl_path.read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds[0] == "config" and kinds[-1] == "verdict" and kinds.count("run") == 6 and kinds.count("cycle") == 3
    assert records[-1]["verdict"] == "DEGRADED" and records[0]["cycles"] == 2 and records[0]["model"] == "stand-in"

    # The command turns it into exit status 3.
    app = typer.Typer()
    app.command()(degradation)
    loads.clear()
    r = CliRunner().invoke(app, ["--cycles", "1", "--runs", "2", "--max-tokens", "11", "--out-dir",
                                 str(tmp_path / "out"), "--report", str(report)])
    assert r.exit_code == 3, r.output
    assert "DEGRADED" in r.output


@pytest.mark.parametrize(("first", "reloaded", "verdict", "exit_code"), [
    # Warm-up first, then the 3 timed runs: p50 100 → 100 tok/s.
    ([100.0, 100.0, 101.0, 99.0], [100.0, 99.0, 100.0, 101.0], "OK", 0),
    # 10 % slower: within the 20 % threshold.
    ([100.0, 100.0, 100.0, 100.0], [90.0, 90.0, 90.0, 90.0], "OK", 0),
    # p50 100 → 75 (25 % slower), but runs that scatter by ±40 %: the drop may be noise.
    ([100.0, 100.0, 60.0, 140.0], [75.0, 75.0, 30.0, 120.0], "INCONCLUSIVE", 4),
    # p50 100 → 60 with steady runs.
    ([100.0, 100.0, 100.0, 100.0], [60.0, 60.0, 60.0, 60.0], "DEGRADED", 3),
])
def test_the_command_turns_each_verdict_into_its_exit_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: list[float], reloaded: list[float], verdict: str,
        exit_code: int) -> None:
    loads = _stand_in(monkeypatch, [first, reloaded])
    report = tmp_path / "benchmarks.md"
    app = typer.Typer()
    app.command()(degradation)
    r = CliRunner().invoke(app, ["--cycles", "1", "--runs", "3", "--warmup", "1", "--max-tokens", "11",
                                 "--out-dir", str(tmp_path / "out"), "--report", str(report)])
    assert r.exit_code == exit_code, r.output
    assert len(loads) == 2
    assert f"**{verdict}**: decode" in report.read_text()
    (jsonl,) = (tmp_path / "out").glob("degradation-*.jsonl")
    last = json.loads(jsonl.read_text().splitlines()[-1])
    assert last["type"] == "verdict" and last["verdict"] == verdict
    assert (last["n_before"], last["n_after"]) == (3, 3)


def test_a_failed_first_load_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from watus.bench.llm_types import BenchError

    @contextlib.contextmanager
    def broken(spec: Any, cfg: Any, log_dir: Path) -> Iterator[_StandInDriver]:
        raise BenchError("engine directory not found")
        yield _StandInDriver([1.0])  # pragma: no cover

    monkeypatch.setattr(deg, "open_target", broken)
    result = run_degradation_bench("self:", TINY, tmp_path, tmp_path / "b.md")
    assert len(result.cycles) == 1 and result.cycles[0].error == "BenchError: engine directory not found"
    assert result.check is None and "**N/A**" in (tmp_path / "b.md").read_text()


# --- for real: llama.cpp in this process ------------------------------------------------------------------


def test_reloads_of_the_default_gguf(tmp_path: Path) -> None:
    report = tmp_path / "docs" / "benchmarks.md"
    result = run_degradation_bench("inprocess:default", TINY, tmp_path / "out", report)
    assert result.model == "SmolLM2-135M-Instruct.Q4_1.gguf" and result.prompt_tokens == TINY.prompt_tokens
    assert [c.index for c in result.cycles] == [0, 1, 2] and all(c.error is None for c in result.cycles)
    for c in result.cycles:
        assert c.load_s is not None and c.load_s > 0 and c.unload_s is not None
        assert len(c.runs) == TINY.runs and all(r.completion_tokens == TINY.max_tokens for r in c.runs)
        assert len(c.decode_tps()) == TINY.runs and c.telemetry is not None and c.telemetry.samples >= 1
        assert c.memory_loaded is not None and c.memory_loaded["status"] in ("ok", "warn")
    assert result.check is not None and result.check.n_before == result.check.n_after == TINY.runs
    # How fast it decodes depends on the machine's load; the verdict must be the one those speeds give.
    expected = detect_drop(result.cycles[0].decode_tps(), result.cycles[-1].decode_tps(), TINY.threshold)
    assert expected is not None and result.check == expected
    assert f"**{expected.verdict}**: {expected.describe()}." in report.read_text()
    assert "<!-- bench:degradation:start -->" in report.read_text()
    assert result.jsonl_path is not None and result.jsonl_path.parent == tmp_path / "out"
