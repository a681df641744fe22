"""The typed contracts between the Watus processes: what crosses a process boundary, as pydantic models.

Producers build these models (a misspelt or missing field fails where it is made, not three processes
later); consumers validate what they receive with the same models. A message that does not validate is
a `WireError`: the consumer logs it with its type and counts it in a metric, and never fills in a
default. Units are in the names: `*_ns` is `time.monotonic_ns()` (one clock for every process of a
machine), `*_ms` a duration in milliseconds, `*_s` seconds of audio.
"""

from watus.core.wire.errors import WireError

__all__ = ["WireError"]
