"""The verdicts of `watus bench soak` (pure logic): does a process grow, and was every question answered?

A soak asks one thing of each process: after it has warmed up, does it stay the same size? Memory is
noisy (the allocator keeps freed arenas, a reply's buffers come and go, the garbage collector runs when it
likes), so single samples are never compared. The method, per process:

- **Warm-up**: the first `warmup_s` of sampling are not judged (models load their lazy parts, pools and
  caches fill on the first turns). Its samples still set the baseline for fds and threads.
- **RSS**: the median of the first `window_s` after the warm-up against the median of the last `window_s`
  of the run; growth = (last − first) / first. PASS when growth ≤ `rss_growth_percent` (5 %). Medians of
  a minute each make one spike in either window harmless, while a leak of a few kB per turn still shows
  over half an hour. Where the judged stretch is shorter than two windows (the test's 2-minute version),
  each window is half of it.
- **Open file descriptors and threads**: counts, not sizes, so the test is exact up to a small jitter:
  the largest count in the last window may exceed the largest seen during the warm-up and the first
  window by at most `fd_margin` / `thread_margin`. HTTP keep-alive sockets and worker-thread pools (anyio's
  threads retire after 10 s idle) come and go by one or two; a leak of one per turn passes any margin
  within minutes. A transient peak mid-run that goes away again is not growth.
- A process that exited (its samples stop, or none was taken) fails.

Turns: the microphone plays its folder of questions in a loop, so each question owns a slot of the endless
stream (`unrolled_slots`). A question counts as **asked** when its audio had played to the end before the
soak's end. Each turn record is placed in the slot where its utterance started (from the audio events);
each asked question must have exactly one record, and no record an error. **Lost**: an asked question
without a record; **split**: one heard as several turns; **failed**: a record with an error; **unplaced**:
a record no audio event places. Any of them fails the soak.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from watus.bench.e2e_turns import Slot, slot_of

PASS, FAIL = "PASS", "FAIL"


@dataclass(frozen=True)
class ProcSample:
    """One reading of one process (and its children): seconds since sampling began, MB, counts."""

    t_s: float
    rss_mb: float
    fds: int
    threads: int
    cpu_percent: float | None = None  # of one core, since the previous reading


@dataclass(frozen=True)
class Thresholds:
    """What the verdicts allow (the command's defaults)."""

    warmup_s: float = 120.0
    window_s: float = 60.0
    rss_growth_percent: float = 5.0
    fd_margin: int = 4
    thread_margin: int = 3


@dataclass(frozen=True)
class ProcVerdict:
    """The growth figures of one process and whether they pass."""

    name: str
    samples: int
    judged: int  # samples after the warm-up
    window_s: float  # length of each compared window (shorter than asked on a short run)
    rss_first_mb: float | None  # median of the first window after the warm-up
    rss_last_mb: float | None  # median of the last window
    rss_growth_percent: float | None
    rss_verdict: str
    fds_baseline: int | None  # max during the warm-up and the first window
    fds_last_max: int | None  # max in the last window
    fds_verdict: str
    threads_baseline: int | None
    threads_last_max: int | None
    threads_verdict: str
    problems: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        ok = all(v == PASS for v in (self.rss_verdict, self.fds_verdict, self.threads_verdict))
        return PASS if ok and not self.problems else FAIL


def _windows(samples: Sequence[ProcSample], th: Thresholds, end_s: float
             ) -> tuple[list[ProcSample], list[ProcSample], list[ProcSample], float]:
    """(warm-up samples, first window, last window, window length) of a series that ran to `end_s`."""
    warm = [s for s in samples if s.t_s < th.warmup_s]
    judged = [s for s in samples if s.t_s >= th.warmup_s]
    window = min(th.window_s, max(0.0, end_s - th.warmup_s) / 2)
    first = [s for s in judged if s.t_s < th.warmup_s + window]
    last = [s for s in judged if s.t_s > end_s - window]
    return warm, first, last, window


def _count_verdict(baseline: int | None, last: int | None, margin: int) -> str:
    if baseline is None or last is None:
        return FAIL
    return PASS if last <= baseline + margin else FAIL


def judge_process(name: str, samples: Sequence[ProcSample], th: Thresholds, end_s: float,
                  exited: bool = False) -> ProcVerdict:
    """The verdict on one process sampled from 0 to `end_s` (s); `exited`: it was found gone."""
    samples = sorted(samples, key=lambda s: s.t_s)
    warm, first, last, window = _windows(samples, th, end_s)
    problems: list[str] = []
    if exited:
        problems.append("the process exited during the soak")
    if not samples:
        problems.append("no samples")
    elif samples[-1].t_s < end_s - max(window, 1.0):
        problems.append(f"samples stop at {samples[-1].t_s:.0f} s of {end_s:.0f} s")
    if not first or not last:
        problems.append("too few samples after the warm-up to judge")
    rss_first = statistics.median(s.rss_mb for s in first) if first else None
    rss_last = statistics.median(s.rss_mb for s in last) if last else None
    growth = (rss_last - rss_first) / rss_first * 100.0 if rss_first and rss_last is not None else None
    rss_ok = growth is not None and growth <= th.rss_growth_percent
    base = [*warm, *first]
    fds_base = max((s.fds for s in base), default=None)
    fds_last = max((s.fds for s in last), default=None)
    thr_base = max((s.threads for s in base), default=None)
    thr_last = max((s.threads for s in last), default=None)
    return ProcVerdict(name, len(samples), sum(s.t_s >= th.warmup_s for s in samples), window, rss_first, rss_last,
                       growth, PASS if rss_ok else FAIL, fds_base, fds_last,
                       _count_verdict(fds_base, fds_last, th.fd_margin), thr_base, thr_last,
                       _count_verdict(thr_base, thr_last, th.thread_margin), problems)


# --- turns ------------------------------------------------------------------------------------------------------


def period_s(slots: Sequence[Slot]) -> float:
    """Seconds of one pass of the looping microphone folder."""
    return slots[-1].end_s if slots else 0.0


def unrolled_slot(slots: Sequence[Slot], position_s: float) -> int | None:
    """The number of the question (counting over every loop of the folder) whose slot holds this stream
    position, or None outside every slot."""
    period = period_s(slots)
    if period <= 0 or position_s < 0:
        return None
    loop, offset = divmod(position_s, period)
    index = slot_of(slots, offset)
    return None if index is None else int(loop) * len(slots) + index


def questions_asked(slots: Sequence[Slot], end_position_s: float) -> int:
    """Questions whose audio had played to its end at this stream position (over every loop)."""
    period = period_s(slots)
    if period <= 0 or end_position_s <= 0:
        return 0
    loops, offset = divmod(end_position_s, period)
    return int(loops) * len(slots) + sum(s.speech_end_s <= offset for s in slots)


@dataclass(frozen=True)
class TurnVerdict:
    """Questions asked against the turn records that answer them."""

    asked: int
    recorded: int  # records placed on an asked question
    answered: int  # asked questions with at least one record
    lost: int
    split: int
    failed: int
    unplaced: int
    interrupted: int  # records interrupted by anything but the benchmark's playback cut (not a failure)
    later: int  # records of questions asked after the end (ignored)
    problems: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        ok = self.asked > 0 and self.recorded == self.asked and not (self.lost or self.split or self.failed
                                                                      or self.unplaced)
        return PASS if ok else FAIL


def place_records(records: Sequence[Mapping[str, Any]], starts_s: Mapping[str, float], slots: Sequence[Slot]
                  ) -> list[int | None]:
    """The unrolled question number of each record, from where its utterance started (`starts_s` by
    turn id, from the audio events); None for a record no event places."""
    out: list[int | None] = []
    for rec in records:
        start = starts_s.get(str(rec.get("turn_id")))
        out.append(None if start is None else unrolled_slot(slots, start))
    return out


def judge_turns(records: Sequence[Mapping[str, Any]], starts_s: Mapping[str, float], slots: Sequence[Slot],
                asked: int, cut_by_bench: frozenset[str] = frozenset()) -> TurnVerdict:
    """The turn verdict of a soak that asked `asked` questions (see the module docstring)."""
    places = place_records(records, starts_s, slots)
    per_question: dict[int, list[Mapping[str, Any]]] = {}
    unplaced = later = 0
    for rec, q in zip(records, places, strict=True):
        if q is None:
            unplaced += 1
        elif q >= asked:
            later += 1
        else:
            per_question.setdefault(q, []).append(rec)
    mine = [r for group in per_question.values() for r in group]
    lost = [q for q in range(asked) if q not in per_question]
    split = sum(len(g) > 1 for g in per_question.values())
    failed = [r for r in mine if r.get("error") is not None]
    problems = []
    if lost:
        problems.append(f"{len(lost)} question(s) without a turn record: #" + ", #".join(map(str, lost[:10])))
    if split:
        problems.append(f"{split} question(s) heard as several turns")
    for r in failed[:5]:
        problems.append(f"turn {r.get('turn_id')} failed: {str(r.get('error'))[:160]}")
    if unplaced:
        problems.append(f"{unplaced} turn record(s) that no audio event places in the microphone stream")
    interrupted = sum(bool(r.get("interrupted")) and str(r.get("turn_id")) not in cut_by_bench for r in mine)
    return TurnVerdict(asked, len(mine), len(per_question), len(lost), split, len(failed), unplaced, interrupted,
                       later, problems)
