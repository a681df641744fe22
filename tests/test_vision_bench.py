"""`watus bench vision` end to end, short: both runs, the JSONL, the report section, the goal checks."""

from __future__ import annotations

import json
from pathlib import Path

from watus.bench import update_markdown_section
from watus.bench.vision import VisionBenchConfig, goal_checks, render_markdown, run_vision_bench


def test_short_vision_bench(tmp_path: Path) -> None:
    cfg = VisionBenchConfig(seconds=2, latency_seconds=1, warmup_s=0.5, frames_per_part=5, threads=2,
                            face_every_n=3)
    result = run_vision_bench(cfg, tmp_path)
    assert result.video_frames == 15
    assert result.detector.frames >= 15 and result.detector.fps > 0
    assert result.service.scenes > 0 and result.service.fps > 0
    assert result.service.stages["inference_ms"] is not None and result.service.stages["faces_ms"] is not None
    for httpx_client in (False, True):
        latency = result.service.latency(httpx_client=httpx_client)
        assert latency is not None and latency["n"] > 20 and 0 < latency["p50"] <= latency["p99"]
    assert [g.name for g in goal_checks(result)] == ["service FPS vs bare detector",
                                                    "GET /v1/scene p99 while the pipeline runs"]

    assert result.jsonl_path is not None
    lines = [json.loads(x) for x in result.jsonl_path.read_text().splitlines()]
    kinds = {x["type"] for x in lines}
    assert kinds == {"meta", "detector_frame", "service_scene", "scene_latency", "summary"}
    assert {x["client"] for x in lines if x["type"] == "scene_latency"} == {"raw-socket", "httpx"}
    summary = lines[-1]
    assert summary["fps_ratio"] == result.fps_ratio and len(summary["goals"]) == 2
    assert all(g["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") for g in summary["goals"])
    assert summary["other_cpu_percent"]["detector"] is not None and summary["other_cpu_percent"]["service"] is not None

    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nprose kept\n")
    update_markdown_section(report, "vision", render_markdown(result))
    text = report.read_text()
    assert "prose kept" in text and "<!-- bench:vision:start -->" in text and "<!-- bench:vision:end -->" in text
    assert "| service pipeline |" in text and "Goal check" in text
