"""Timing spans and the turn id that follows one spoken turn across processes.

All processes of a machine stamp spans with `time.monotonic_ns()`, one clock for the whole machine, so
spans recorded by the audio process and the agent can be subtracted from each other. Durations inside
one process use `time.perf_counter()` (finer, same monotonic guarantee).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

#: HTTP header carrying the turn id to every service (DESIGN.md).
TURN_HEADER = "X-Watus-Turn"
_TURN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_turn_id() -> str:
    """A short, URL- and log-safe id for one turn."""
    return uuid.uuid4().hex[:16]


def clean_turn_id(value: str | None) -> str | None:
    """The turn id of a request header if it is well formed, else None (never trust it into logs raw)."""
    if value and _TURN_RE.match(value):
        return value
    return None


@dataclass(frozen=True)
class Span:
    """One stage of work: name, start and end on the machine-wide monotonic clock (ns)."""

    name: str
    start_ns: int
    end_ns: int

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def as_dict(self) -> dict[str, float | str | int]:
        return {"name": self.name, "start_ns": self.start_ns, "end_ns": self.end_ns, "ms": round(self.ms, 3)}


@dataclass
class SpanRecorder:
    """Collects the spans of one request or turn; cheap enough for hot paths."""

    turn_id: str | None = None
    spans: list[Span] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        start = time.monotonic_ns()
        try:
            yield
        finally:
            self.spans.append(Span(name, start, time.monotonic_ns()))

    def mark(self, name: str, at_ns: int | None = None) -> int:
        """Record an instant (e.g. `first_token`); returns the timestamp."""
        ts = time.monotonic_ns() if at_ns is None else at_ns
        self.marks[name] = ts
        return ts

    def ms_between(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return (self.marks[end] - self.marks[start]) / 1e6
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "turn_id": self.turn_id,
            "spans": [s.as_dict() for s in self.spans],
            "marks": dict(self.marks),
        }
