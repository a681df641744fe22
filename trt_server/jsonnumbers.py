"""JSON numbers of bounded length for the JSON grammar, with the range keywords pydantic writes.

A number has at most `Digits.integral` integral and `Digits.fraction` fractional digits and no exponent,
so its longest form is known (`number_expr` returns it with the expression). Range keywords
(`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) are honoured exactly where they can be
written as a short list of alternatives: integers in a range of at most `ENUM_LIMIT` values or with
one bound, non-negative numbers with integral bounds (`ge=0, le=1`, `gt=0`, `ge=1, le=5`). Other
ranges return None and the whole schema goes to the engine's own converter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Most alternatives a range is spelled out as.
ENUM_LIMIT = 1000

Expr = tuple[str, int]


@dataclass(frozen=True)
class Digits:
    """How many digits a number may have (a range's own bounds may need more: they win)."""

    integral: int = 15
    fraction: int = 9

    def terminals(self) -> dict[str, str]:
        """The helper terminals the expressions refer to (llguidance's Lark)."""
        i, f = self.integral, self.fraction
        return {
            "UINT": f'"0" | /[1-9]/ /[0-9]/{{0,{i - 1}}}',
            "FRAC": f'"." /[0-9]/{{1,{f}}}',
            "ZFRAC": f'"." "0"{{1,{f}}}',
            "NZFRAC": f'"." /[0-9]/{{0,{f - 1}}} /[1-9]/',
        }


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, lower: bool) -> tuple[float | None, bool] | None:
    """The tighter of `inclusive`/`exclusive` as (value, is_exclusive); None if malformed."""
    found: list[tuple[float, bool]] = []
    for key, excl in ((inclusive, False), (exclusive, True)):
        v = schema.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None  # draft-4 boolean exclusives and the like
        found.append((float(v), excl))
    if not found:
        return None, False
    # Tighter: the larger lower bound (the smaller upper one); at a tie the exclusive one.
    return max(found, key=lambda b: (b[0] if lower else -b[0], b[1]))


def _alts(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "( " + " | ".join(items) + " )"


def _at_least(k: int, digits: Digits) -> Expr | None:
    """Unsigned integers >= k >= 0."""
    n = digits.integral
    if k == 0:
        return "UINT", n
    d = len(str(k))
    if 10**d - k > ENUM_LIMIT:
        return None
    alts = [f'"{i}"' for i in range(k, 10**d)]
    if d < n:
        alts.append(f"/[1-9]/ /[0-9]/{{{d},{n - 1}}}")
    return _alts(alts), max(d, n)


def _integer(lo: tuple[float | None, bool], hi: tuple[float | None, bool], digits: Digits) -> Expr | None:
    a = None if lo[0] is None else (math.floor(lo[0]) + 1 if lo[1] and lo[0].is_integer() else math.ceil(lo[0]))
    b = None if hi[0] is None else (math.ceil(hi[0]) - 1 if hi[1] and hi[0].is_integer() else math.floor(hi[0]))
    n = digits.integral
    if a is None and b is None:
        return '"-"? UINT', 1 + n
    if a is not None and b is not None:
        if a > b or b - a >= ENUM_LIMIT:
            return None
        values = [str(i) for i in range(a, b + 1)]
        return _alts([f'"{v}"' for v in values]), max(len(v) for v in values)
    if a is not None:
        if a >= 0:
            return _at_least(a, digits)
        if -a > ENUM_LIMIT:
            return None
        return _alts(["UINT", *(f'"{-i}"' for i in range(1, -a + 1))]), max(1 + n, len(str(a)))
    assert b is not None
    if b < 0:
        least = _at_least(-b, digits)
        return None if least is None else (f'"-" {least[0]}', 1 + least[1])
    if b > ENUM_LIMIT:
        return None
    return _alts([f'"-" /[1-9]/ /[0-9]/{{0,{n - 1}}}', *(f'"{i}"' for i in range(b + 1))]), max(1 + n, len(str(b)))


def _number(lo: tuple[float | None, bool], hi: tuple[float | None, bool], digits: Digits) -> Expr | None:
    frac = 1 + digits.fraction
    if lo[0] is None and hi[0] is None:
        return '"-"? UINT FRAC?', 1 + digits.integral + frac
    if lo[0] is None or lo[0] < 0 or not lo[0].is_integer() or (hi[0] is not None and not hi[0].is_integer()):
        return None
    low, low_ex = int(lo[0]), lo[1]
    if hi[0] is None:
        least = _at_least(low + 1 if low_ex else low, digits)
        if least is None:
            return None
        if not low_ex:
            return f"{least[0]} FRAC?", least[1] + frac
        return f'( {least[0]} FRAC? | "{low}" NZFRAC )', max(least[1], len(str(low))) + frac
    high, high_ex = int(hi[0]), hi[1]
    if high < low or high - low >= ENUM_LIMIT:
        return None
    alts: list[str] = []
    for i in range(low, high + 1):
        if i < high:
            # Below the upper bound any fraction stays under it; at an exclusive lower bound it must be > 0.
            alts.append(f'"{i}" NZFRAC' if i == low and low_ex else f'"{i}" FRAC?')
        elif not high_ex and not (i == low and low_ex):
            alts.append(f'"{i}" ZFRAC?')
    return (_alts(alts), len(str(high)) + frac) if alts else None


def number_expr(schema: dict[str, Any], integer: bool, digits: Digits) -> Expr | None:
    """A terminal body (llguidance's Lark) for a JSON number (`integer`: without fraction) under
    `schema`'s range keywords, and its longest length in bytes; None where the range is not
    expressible here (whatever the digits)."""
    lo = _bound(schema, "minimum", "exclusiveMinimum", lower=True)
    hi = _bound(schema, "maximum", "exclusiveMaximum", lower=False)
    if lo is None or hi is None:
        return None
    return _integer(lo, hi, digits) if integer else _number(lo, hi, digits)
