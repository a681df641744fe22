"""Small helpers every benchmark report uses: Markdown table cells and JSON-safe values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from watus.bench.stats import Summary, fmt


def row(*cells: str) -> str:
    """One Markdown table row; a `|` inside a cell is escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def cell(s: Summary | None, attr: str, digits: int = 1) -> str:
    """One statistic of a summary (`p50`, `p95`, ...), or a dash when there is none."""
    return fmt(getattr(s, attr), digits) if s is not None else "–"


def mean_max(value: Any, scale: float = 1.0, digits: int = 0) -> str:
    """`mean / max` of a telemetry MeanMax."""
    if value is None:
        return "–"
    return f"{fmt(value.mean * scale, digits)} / {fmt(value.max * scale, digits)}"


def jsonable(obj: Any) -> Any:
    """Summaries, paths, containers made JSON-safe (a non-finite float becomes null: JSON has no NaN)."""
    if isinstance(obj, Summary):
        return obj.as_dict()
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
