"""The writers of `watus bench soak`: the CSV of samples, the JSON of samples and verdicts, the RSS plot and
the `bench:soak` section of `docs/benchmarks.md`.

All are pure functions of a `SoakResult`, so they are tested on constructed series without processes.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

import psutil

from watus.bench.report import jsonable, row
from watus.bench.soak_run import PROCESSES, SoakResult
from watus.bench.soak_verdict import PASS, ProcVerdict
from watus.bench.stats import fmt, summarize

_COLOURS = {"llm": "#dd8452", "vision": "#4c72b0", "agent": "#55a868", "audio": "#c44e52"}


def write_csv(path: Path, result: SoakResult) -> Path:
    """One row per sample of each process: t_s, process, pid, rss_mb, fds, threads, cpu_percent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["t_s", "process", "pid", "rss_mb", "fds", "threads", "cpu_percent"])
        for name in PROCESSES:
            for s in result.samples.get(name, []):
                out.writerow([s.t_s, name, result.pids.get(name, ""), s.rss_mb, s.fds, s.threads,
                              "" if s.cpu_percent is None else s.cpu_percent])
    return path


def contention(result: SoakResult) -> dict[str, float | None]:
    """The machine's mean CPU use (% of all cores), the soak's processes' share of it, the rest (other
    work on a shared machine), and the mean 1-minute load."""
    cores = psutil.cpu_count() or 1
    machine = [m.cpu_percent for m in result.machine_samples[1:]]  # the first reading covers no interval
    ours_by_t: dict[float, float] = {}
    for series in result.samples.values():
        for s in series[1:]:
            ours_by_t[s.t_s] = ours_by_t.get(s.t_s, 0.0) + (s.cpu_percent or 0.0) / cores
    loads = [m.load1 for m in result.machine_samples if m.load1 is not None]
    total = statistics.fmean(machine) if machine else None
    ours = statistics.fmean(ours_by_t.values()) if ours_by_t else None
    return {"cores": float(cores), "machine_cpu_percent": None if total is None else round(total, 1),
            "soak_cpu_percent": None if ours is None else round(ours, 1),
            "other_cpu_percent": None if total is None or ours is None else round(max(0.0, total - ours), 1),
            "load1": round(statistics.fmean(loads), 2) if loads else None}


def latency_drift(result: SoakResult) -> dict[str, Any]:
    """e2e ms (VAD end of speech → first audio) of the first and the last quarter of the turns: a process
    that slows down as it ages shows here before it fails (reported, not judged)."""
    timed = [float(r["e2e_ms"]) for r in result.records if r.get("e2e_ms") is not None]
    quarter = max(1, len(timed) // 4)
    first, last, every = summarize(timed[:quarter]), summarize(timed[-quarter:]), summarize(timed)
    return {"turns": len(timed), "all_p50": every.p50 if every else None, "all_p95": every.p95 if every else None,
            "first_quarter_p50": first.p50 if first else None, "last_quarter_p50": last.p50 if last else None}


def json_summary(result: SoakResult) -> dict[str, Any]:
    """Everything a later look needs: settings, machine, verdicts, turns, contention and every sample."""
    cfg = result.config
    return jsonable({
        "started": result.started, "duration_s": round(result.duration_s, 1), "verdict": result.verdict,
        "machine": result.machine, "llm_model": result.llm_model, "pids": result.pids,
        "config": {"minutes": cfg.minutes, "interval_s": cfg.interval_s, "questions": list(cfg.questions),
                   "video": cfg.video, "vision_fps": cfg.vision_fps, "gap_s": cfg.gap_s, "playback_s": cfg.playback_s,
                   "max_tokens": cfg.max_tokens, "thresholds": vars(cfg.thresholds)},
        "processes": [{**vars(p), "verdict": p.verdict} for p in result.procs],
        "turns": None if result.turns is None else {**vars(result.turns), "verdict": result.turns.verdict},
        "latency": latency_drift(result), "contention": contention(result), "errors": result.errors,
        "samples": {name: [vars(s) for s in series] for name, series in result.samples.items()},
        "machine_samples": [vars(m) for m in result.machine_samples],
        "csv": result.csv_path, "chart": result.chart_path,
    })


def write_json(path: Path, result: SoakResult) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_summary(result), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def rss_chart(result: SoakResult, path: Path) -> Path:
    """A small PNG: RSS over time per process (one panel each, its own scale), the warm-up shaded and the
    two compared medians drawn over their windows."""
    from matplotlib.figure import Figure

    th = result.config.thresholds
    fig = Figure(figsize=(10, 5.6), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    verdicts = {p.name: p for p in result.procs}
    end_min = result.duration_s / 60.0
    for ax, name in zip(axes, PROCESSES, strict=True):
        series = result.samples.get(name, [])
        ax.plot([s.t_s / 60.0 for s in series], [s.rss_mb for s in series], color=_COLOURS[name], linewidth=1.2)
        ax.axvspan(0, th.warmup_s / 60.0, color="#dddddd", alpha=0.6, linewidth=0)
        v = verdicts.get(name)
        title = name
        if v is not None and v.rss_first_mb is not None and v.rss_last_mb is not None:
            w = v.window_s / 60.0
            start = th.warmup_s / 60.0
            ax.hlines(v.rss_first_mb, start, start + w, color="black", linewidth=2)
            ax.hlines(v.rss_last_mb, end_min - w, end_min, color="black", linewidth=2)
            title += f": {fmt(v.rss_first_mb, 0)} → {fmt(v.rss_last_mb, 0)} MB ({v.rss_growth_percent:+.1f} %), " \
                     f"{v.rss_verdict}"
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("RSS MB", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("minutes", fontsize=8)
    fig.suptitle(f"Watus soak, {end_min:.3g} min: RSS per process (grey: warm-up; black: the medians compared)",
                 fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _proc_row(p: ProcVerdict) -> str:
    growth = "–" if p.rss_growth_percent is None else f"{p.rss_growth_percent:+.2f} %"
    verdict = f"**{p.verdict}**" + (f" ({'; '.join(p.problems)})" if p.problems else "")
    return row(p.name, str(p.samples), fmt(p.rss_first_mb, 1), fmt(p.rss_last_mb, 1), growth, p.rss_verdict,
               f"{p.fds_baseline} → {p.fds_last_max}", p.fds_verdict, f"{p.threads_baseline} → {p.threads_last_max}",
               p.threads_verdict, verdict)


def render_markdown(result: SoakResult, chart_link: str | None = None) -> str:
    """The report section (without markers): setup, method, machine, verdict table, turns, plot."""
    cfg, th, t = result.config, result.config.thresholds, result.turns
    cont, lat = contention(result), latency_drift(result)
    m = result.machine
    out = ["## Soak (`watus bench soak`)", "",
           f"Measured {result.started}: `watus bench soak --minutes {cfg.minutes:g}` — all four real processes on "
           f"127.0.0.1 (the LLM server{f' with `{result.llm_model}`' if result.llm_model else ''}, vision on a "
           f"looped video at {cfg.vision_fps:g} fps, the agent, the audio service), {len(cfg.questions)} spoken "
           f"questions played back to back in a loop as the audio service's microphone ({cfg.gap_s:g} s of "
           f"silence after each; each reply cut after {cfg.playback_s:g} s of playback; replies of at most "
           f"{cfg.max_tokens or 'the agent’s own limit of'} tokens), each process's RSS, open file descriptors "
           f"and threads (summed over it and its children, psutil) sampled every {cfg.interval_s:g} s for "
           f"{result.duration_s / 60:.1f} min.", "",
           f"Method: the first {th.warmup_s:g} s are warm-up. **RSS**: median of the first {th.window_s:g} s after "
           f"the warm-up vs median of the last {th.window_s:g} s (each half of the judged stretch when it is "
           f"shorter than two windows); PASS at ≤ {th.rss_growth_percent:g} % growth. **fds / threads**: the "
           "largest count in the last window may exceed the largest of the warm-up and the first window by at "
           f"most {th.fd_margin} fds / {th.thread_margin} threads (keep-alive sockets and worker-thread pools "
           "come and go by one or two; a leak per turn passes that within minutes). **Turns**: every question "
           "whose audio played to its end before the soak ended must have exactly one turn record, placed by "
           "the audio events in that question's stretch of the microphone stream, and none may have failed.", "",
           "### Machine", "", row("", ""), "|---|---|",
           *[row(k, v) for k, v in m.items() if k in ("board", "cpu", "cores", "ram", "os", "python", "watus")],
           row("shared load", f"machine CPU {fmt(cont['machine_cpu_percent'], 0)} % of {cont['cores']:.0f} cores "
               f"(the soak's processes {fmt(cont['soak_cpu_percent'], 0)} %, other work "
               f"{fmt(cont['other_cpu_percent'], 0)} %), load average {fmt(cont['load1'], 2)}"), "",
           "### Verdict per process", "",
           row("process", "samples", "RSS first MB", "RSS last MB", "growth", "RSS", "fds (base → last max)", "fds",
               "threads (base → last max)", "threads", "verdict"),
           "|---|---|---|---|---|---|---|---|---|---|---|",
           *[_proc_row(p) for p in result.procs], "", "### Turns", ""]
    if t is None:
        out.append("No turns were judged (the soak did not get that far).")
    else:
        out += [row("asked", "recorded", "lost", "split", "failed", "unplaced", "interrupted otherwise",
                    "e2e p50 ms (first → last quarter)", "verdict"), "|---|---|---|---|---|---|---|---|---|",
                row(str(t.asked), str(t.recorded), str(t.lost), str(t.split), str(t.failed), str(t.unplaced),
                    str(t.interrupted), f"{fmt(lat['first_quarter_p50'], 0)} → {fmt(lat['last_quarter_p50'], 0)}",
                    f"**{t.verdict}**")]
        out += [f"- {p}" for p in t.problems]
    out += ["", f"Overall: **{result.verdict}**." + (" Problems: " + "; ".join(result.errors) if result.errors
                                                       else "")]
    if result.csv_path or result.json_path:
        out += ["", "Samples: " + ", ".join(f"`{p}`" for p in (result.csv_path, result.json_path) if p) + "."]
    if chart_link:
        out += ["", f"![RSS of each process over the soak]({chart_link})"]
    return "\n".join(out)


def summary_rows(result: SoakResult) -> list[tuple[str, str, str]]:
    """(what, figures, verdict) lines for the command's table."""
    rows = []
    for p in result.procs:
        growth = "–" if p.rss_growth_percent is None else f"{p.rss_growth_percent:+.2f} %"
        rows.append((p.name, f"RSS {fmt(p.rss_first_mb, 0)} → {fmt(p.rss_last_mb, 0)} MB ({growth}), fds "
                     f"{p.fds_baseline} → {p.fds_last_max}, threads {p.threads_baseline} → {p.threads_last_max}"
                     + (f"; {'; '.join(p.problems)}" if p.problems else ""), p.verdict))
    t = result.turns
    if t is not None:
        rows.append(("turns", f"{t.asked} asked, {t.recorded} recorded, {t.lost} lost, {t.split} split, "
                     f"{t.failed} failed, {t.unplaced} unplaced", t.verdict))
    rows.append(("overall", "; ".join(result.errors) or "", result.verdict))
    return rows


__all__ = ["PASS", "contention", "json_summary", "latency_drift", "render_markdown", "rss_chart", "summary_rows",
           "write_csv", "write_json"]
