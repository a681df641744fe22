"""`watus bench llm`'s sampling-features phase (plain, logprobs, n=2) against the running LLM server."""

from __future__ import annotations

import json
from pathlib import Path

from watus.bench.llm import BenchConfig, BenchResult, bench_target, parse_target, render_markdown, write_jsonl
from watus.bench.llm_types import FEATURE_VARIANTS


def test_features_phase_times_each_variant(llm_url: str, tmp_path: Path) -> None:
    spec = f"openai:{llm_url}"
    cfg = BenchConfig(runs=1, warmup=0, prompt_tokens=16, max_tokens=8, concurrency=(), threads=2,
                      telemetry_interval_s=0.05, feature_runs=2, ours=spec)
    target = bench_target(parse_target(spec), cfg, tmp_path)
    assert target.error is None, target.error
    assert [v.name for v in target.features] == list(FEATURE_VARIANTS)
    tokens = {v.name: [r.completion_tokens for r in v.runs] for v in target.features}
    assert tokens == {"plain": [8, 8], "logprobs (top 5)": [8, 8], "n=2": [16, 16]}
    for v in target.features:
        assert v.errors == 0 and all(r.decode_tps and r.decode_tps > 0 for r in v.runs)
        assert all(r.phase == f"feature:{v.name}" for r in v.runs)

    result = BenchResult(config=cfg, machine={"cpu": "test"}, started="2025-01-01T00:00:00+00:00",
                         targets=[target])
    section = render_markdown(result)
    assert "### What sampling features cost" in section
    assert f"| `{spec}` | n=2 | 16 |" in section and "| logprobs (top 5) |" in section
    path = tmp_path / "out.jsonl"
    write_jsonl(path, result)
    features = [line for line in map(json.loads, path.read_text().splitlines()) if line["type"] == "feature"]
    assert [f["variant"] for f in features] == list(FEATURE_VARIANTS)
    # Only our server runs the phase: another target of the same run does not.
    other = bench_target(parse_target(spec), BenchConfig(**{**cfg.__dict__, "ours": "self:"}), tmp_path)
    assert other.error is None and other.features == []
