"""The goal checks of `watus bench e2e`, on the per-mode statistics of one run.

Latency goals compare medians with their noise (2 standard errors, `watus.bench.stats`), so a run too
short or too noisy to tell says INCONCLUSIVE rather than a verdict it cannot back; a goal whose modes were
not measured says N/A.
"""

from __future__ import annotations

from watus.bench.e2e_report import ModeStats
from watus.bench.llm_report import GoalCheck, goal_verdict
from watus.bench.stats import median_se, ratio_noise

#: Streaming e2e p50 against the sequential baseline's, and against the sum of the stages that cannot
#: overlap (VAD tail + ASR + scene + LLM to first sentence + TTS first chunk).
GOAL_VS_SEQUENTIAL = 0.5
GOAL_VS_CRITICAL_PATH = 1.2
#: Preemptive perceived p50 against streaming's: the reply prepared during the VAD tail.
GOAL_PREEMPTIVE_VS_STREAMING = 0.5
#: Perceived p50 of the fastest pipeline (preemptive) on the machine the benchmark ran on, ms.
GOAL_PERCEIVED_MS = 1000.0


def _not_measured(name: str, goal: str, missing: list[str]) -> GoalCheck:
    return GoalCheck(name, goal, "not measured: " + (", ".join(missing) or "no timed turns"), "N/A")


def _streaming_checks(stats: dict[str, ModeStats]) -> list[GoalCheck]:
    checks: list[GoalCheck] = []
    streaming, sequential = stats.get("streaming"), stats.get("sequential")
    s_e2e = streaming.e2e if streaming is not None else None
    name, goal = "streaming vs sequential", f"streaming e2e p50 ≤ {GOAL_VS_SEQUENTIAL:g} × sequential e2e p50"
    q_e2e = sequential.e2e if sequential is not None else None
    if s_e2e is not None and q_e2e is not None and q_e2e.p50 > 0:
        ratio, noise = s_e2e.p50 / q_e2e.p50, ratio_noise(s_e2e, q_e2e)
        checks.append(GoalCheck(name, goal, f"{s_e2e.p50:,.0f} / {q_e2e.p50:,.0f} ms = {ratio:.3f}× "
                                f"(noise ±{noise:.3f} = 2 SE, n={s_e2e.n}/{q_e2e.n})",
                                goal_verdict(ratio, GOAL_VS_SEQUENTIAL, noise, higher_is_better=False,
                                             tolerate=False)))
    else:
        checks.append(_not_measured(name, goal, [m for m, e in (("streaming", s_e2e), ("sequential", q_e2e))
                                                 if e is None]))
    name = "streaming vs stages that cannot overlap"
    goal = (f"streaming e2e p50 ≤ {GOAL_VS_CRITICAL_PATH:g} × p50 of (VAD tail + ASR + scene + LLM to first "
            "sentence + TTS first chunk)")
    total = streaming.parts.get("sum") if streaming is not None else None
    if s_e2e is not None and total is not None and total.p50 > 0:
        ratio, noise = s_e2e.p50 / total.p50, ratio_noise(s_e2e, total)
        without_tail = streaming.parts.get("vad_tail") if streaming is not None else None
        extra = ""
        if without_tail is not None and total.p50 - without_tail.p50 > 0:
            extra = f"; without the VAD tail, which e2e does not contain: " \
                    f"{s_e2e.p50 / (total.p50 - without_tail.p50):.3f}×"
        checks.append(GoalCheck(name, goal, f"{s_e2e.p50:,.0f} / {total.p50:,.0f} ms = {ratio:.3f}× "
                                f"(noise ±{noise:.3f} = 2 SE, n={s_e2e.n}/{total.n}){extra}",
                                goal_verdict(ratio, GOAL_VS_CRITICAL_PATH, noise, higher_is_better=False,
                                             tolerate=False)))
    else:
        checks.append(GoalCheck(name, goal, "not measured: no streaming turn with every stage", "N/A"))
    return checks


def _preemptive_vs_streaming(stats: dict[str, ModeStats]) -> GoalCheck:
    name = "preemptive vs streaming (perceived)"
    goal = f"preemptive perceived p50 ≤ {GOAL_PREEMPTIVE_VS_STREAMING:g} × streaming perceived p50"
    pre, streaming = stats.get("preemptive"), stats.get("streaming")
    a, b = (pre.perceived if pre else None), (streaming.perceived if streaming else None)
    if a is None or b is None or b.p50 <= 0:
        return _not_measured(name, goal, [m for m, s in (("preemptive", a), ("streaming", b)) if s is None])
    ratio, noise = a.p50 / b.p50, ratio_noise(a, b)
    rate = pre.hit_rate if pre is not None else None
    hits = f"; hit rate {rate:.0%}" if rate is not None else ""
    return GoalCheck(name, goal, f"{a.p50:,.0f} / {b.p50:,.0f} ms = {ratio:.3f}× (noise ±{noise:.3f} = 2 SE, "
                     f"n={a.n}/{b.n}){hits}",
                     goal_verdict(ratio, GOAL_PREEMPTIVE_VS_STREAMING, noise, higher_is_better=False, tolerate=False))


def _no_cut_offs(stats: dict[str, ModeStats], expected_paused: int | None) -> GoalCheck:
    """Zero cut-offs on the paused questions with the end-of-turn model (preemptive); the silence-only
    modes' counts are shown beside it. INCONCLUSIVE when a paused question got no turn at all."""
    name, goal = "no cut-offs on paused questions", "0 paused questions cut off (preemptive: end-of-turn model)"
    pre = stats.get("preemptive")
    if pre is None or pre.paused_questions == 0:
        return _not_measured(name, goal, ["preemptive turns on questions with a pause"])
    others = ", ".join(f"{m} {s.paused_cut_off} of {s.paused_questions}" for m, s in stats.items()
                       if m != "preemptive" and s.paused_questions)
    figures = f"{pre.paused_cut_off} of {pre.paused_questions} cut off ({pre.cut_off_turns} cut-off turns in all)" \
        + (f"; silence tail only: {others}" if others else "")
    if pre.paused_cut_off:
        return GoalCheck(name, goal, figures, "FAIL")
    if expected_paused is not None and pre.paused_questions < expected_paused:
        return GoalCheck(name, goal, figures + f"; {expected_paused - pre.paused_questions} of {expected_paused} "
                         "got no turn", "INCONCLUSIVE")
    return GoalCheck(name, goal, figures, "PASS")


def _perceived_on_machine(stats: dict[str, ModeStats]) -> GoalCheck:
    name, goal = "perceived on this machine", f"preemptive perceived p50 < {GOAL_PERCEIVED_MS:,.0f} ms"
    pre = stats.get("preemptive")
    s = pre.perceived if pre is not None else None
    if s is None:
        return _not_measured(name, goal, ["preemptive"])
    noise = 2.0 * median_se(s)
    others = ", ".join(f"{m} {x.perceived.p50:,.0f}" for m, x in stats.items()
                       if m != "preemptive" and x.perceived is not None)
    figures = f"p50 {s.p50:,.0f} ms, p95 {s.p95:,.0f} ms (noise ±{noise:,.0f} ms = 2 SE, n={s.n})" \
        + (f"; {others} ms" if others else "")
    return GoalCheck(name, goal, figures, goal_verdict(s.p50, GOAL_PERCEIVED_MS, noise, higher_is_better=False,
                                                       tolerate=False))


def goal_checks(stats: dict[str, ModeStats], expected_paused: int | None = None) -> list[GoalCheck]:
    """Every goal of the issue: streaming vs sequential and vs the stages that cannot overlap (e2e); preemptive
    vs streaming (perceived); no cut-offs on the paused questions; perceived p50 on this machine.

    `expected_paused`: paused questions each mode was asked (runs × paused questions), to tell a question that
    got no turn from one that was not cut off."""
    return [*_streaming_checks(stats), _preemptive_vs_streaming(stats), _no_cut_offs(stats, expected_paused),
            _perceived_on_machine(stats)]
