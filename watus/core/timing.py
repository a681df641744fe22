"""The turn id that follows one spoken turn across processes.

All processes of a machine stamp their stages with `time.monotonic_ns()`, one clock for the whole
machine, so times recorded by the audio process and the agent can be subtracted from each other.
Durations inside one process use `time.perf_counter()` (finer, same monotonic guarantee).
"""

from __future__ import annotations

import re
import uuid

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
