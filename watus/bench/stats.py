"""Small, dependency-free statistics for benchmark runs: percentiles, summaries, ratio noise.

Benchmarks here take 5-50 samples per figure, so the definitions matter more than speed: percentiles
interpolate linearly between order statistics (numpy's default, so figures match what anyone gets
from `numpy.percentile` on the JSONL), and comparisons of two targets carry an estimate of their
measurement noise instead of a bare ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks.

    Raises ValueError on an empty sequence or q outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return float(ordered[lo])
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo))


@dataclass(frozen=True)
class Summary:
    """Distribution of one figure over runs (sample standard deviation; 0 for a single value)."""

    n: int
    mean: float
    stdev: float
    min: float
    max: float
    p50: float
    p95: float
    #: Median absolute deviation from the median: a spread that one stalled run does not blow up.
    mad: float

    @property
    def cv(self) -> float:
        """Coefficient of variation (stdev / mean); 0 when the mean is 0."""
        return self.stdev / abs(self.mean) if self.mean else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(values: Iterable[float | None]) -> Summary | None:
    """Summary of the values that are not None; None if there are none."""
    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not present:
        return None
    n = len(present)
    mean = sum(present) / n
    stdev = math.sqrt(sum((v - mean) ** 2 for v in present) / (n - 1)) if n > 1 else 0.0
    p50 = percentile(present, 50.0)
    mad = percentile([abs(v - p50) for v in present], 50.0)
    return Summary(n=n, mean=mean, stdev=stdev, min=min(present), max=max(present), p50=p50,
                   p95=percentile(present, 95.0), mad=mad)


def median_se(s: Summary) -> float:
    """Standard error of the median (normal approximation, 1.2533·σ/√n) with σ estimated robustly as
    1.4826·MAD, so a run stalled by another process does not make every comparison inconclusive."""
    return 1.2533 * 1.4826 * s.mad / math.sqrt(s.n)


def ratio_noise(a: Summary, b: Summary, z: float = 2.0) -> float:
    """Relative uncertainty of p50(a) / p50(b): z standard errors (2 ≈ 95%).

    With one run a side has no spread estimate and contributes nothing, which is why the goal checks
    state n.
    """
    rel_a = median_se(a) / abs(a.p50) if a.p50 else 0.0
    rel_b = median_se(b) / abs(b.p50) if b.p50 else 0.0
    return z * math.hypot(rel_a, rel_b)


def difference_noise(a: Summary, b: Summary, z: float = 2.0) -> float:
    """Uncertainty of p50(a) − p50(b) in their unit: z standard errors."""
    return z * math.hypot(median_se(a), median_se(b))


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a Markdown table, `–` for a missing one."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"
