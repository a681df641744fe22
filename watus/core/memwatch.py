"""Swap watch: is the machine swapping, or about to run out of memory?

On the Jetson there is no VRAM: the LLM's weights and KV cache, the vision and audio models and every
process share one pool of LPDDR. When it runs short the kernel pushes pages to swap (zram by default on
JetPack, i.e. compressed RAM that the CPU has to decompress on every touch) and decode speed falls with
no error anywhere. The only way to see it is to look, so every service reports this dict in `/health`,
`watus status` shows it, and a warning is logged once each time the state changes (not on every poll,
which would flood journald on a robot that stays in one state for hours).

Thresholds are plain arguments with defaults, not settings: warn when any swap is in use, or when
`MemAvailable` is below 10 % of RAM or below 2 GB. Reads `/proc/meminfo` (and `/proc/swaps`,
`/proc/vmstat` for the kind of swap and the paging rate); `psutil` elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MEMINFO = Path("/proc/meminfo")
SWAPS = Path("/proc/swaps")
VMSTAT = Path("/proc/vmstat")

#: Reasons a check is not ok, in the order they are reported.
SWAP_IN_USE = "swap_in_use"
LOW_MEMORY = "low_memory"


@dataclass(frozen=True)
class MemInfo:
    """Memory figures in MB (MiB, as `free -m` and tegrastats print them)."""

    total_mb: float
    available_mb: float
    free_mb: float
    swap_total_mb: float
    swap_free_mb: float

    @property
    def swap_used_mb(self) -> float:
        return max(0.0, self.swap_total_mb - self.swap_free_mb)

    @property
    def available_percent(self) -> float:
        return 100.0 * self.available_mb / self.total_mb if self.total_mb > 0 else 0.0


def parse_meminfo(text: str) -> MemInfo:
    """Parse `/proc/meminfo` text (`Key:   123 kB` lines). Raises ValueError without MemTotal.

    `MemAvailable` is missing on kernels before 3.14: free + buffers + cached stands in for it.
    """
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            number = float(parts[0])
        except ValueError:
            continue
        unit = parts[1].lower() if len(parts) > 1 else ""
        values[key.strip()] = number / 1024.0 if unit == "kb" else number / 2**20  # kB, else bytes
    if "MemTotal" not in values:
        raise ValueError("no MemTotal in meminfo text")
    free = values.get("MemFree", 0.0)
    available = values.get("MemAvailable")
    if available is None:
        available = free + values.get("Buffers", 0.0) + values.get("Cached", 0.0)
    return MemInfo(total_mb=values["MemTotal"], available_mb=available, free_mb=free,
                   swap_total_mb=values.get("SwapTotal", 0.0), swap_free_mb=values.get("SwapFree", 0.0))


def parse_swaps(text: str) -> str | None:
    """Kind of swap from `/proc/swaps`: `zram`, `disk`, `zram+disk`, or None when there is none."""
    kinds = set()
    for line in text.splitlines()[1:]:  # the first line is the header
        fields = line.split()
        if fields:
            kinds.add("zram" if "/zram" in fields[0] else "disk")
    return "+".join(sorted(kinds, reverse=True)) or None


def parse_vmstat_swap(text: str) -> tuple[int, int] | None:
    """(pages swapped in, pages swapped out) since boot, from `/proc/vmstat`."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in ("pswpin", "pswpout"):
            try:
                counts[key] = int(value)
            except ValueError:
                return None
    if len(counts) != 2:
        return None
    return counts["pswpin"], counts["pswpout"]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _psutil_meminfo() -> MemInfo | None:
    try:
        import psutil

        vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    except Exception:  # psutil missing or unsupported platform: no reading rather than a crash
        return None
    mb = 2.0**20
    return MemInfo(total_mb=vm.total / mb, available_mb=vm.available / mb, free_mb=vm.free / mb,
                   swap_total_mb=sw.total / mb, swap_free_mb=sw.free / mb)


def read_meminfo(path: Path = MEMINFO) -> tuple[MemInfo | None, str]:
    """The current reading and where it came from (`/proc/meminfo`, `psutil`, or `none`)."""
    text = _read(path)
    if text is not None:
        try:
            return parse_meminfo(text), str(path)
        except ValueError as e:
            log.debug("unreadable %s: %s", path, e)
    info = _psutil_meminfo()
    return info, ("psutil" if info is not None else "none")


def assess(info: MemInfo, *, swap_used_mb: float = 0.0, min_available_percent: float = 10.0,
           min_available_mb: float = 2048.0) -> list[str]:
    """Reasons for concern: swap used above `swap_used_mb`; available memory below either floor."""
    reasons = []
    if info.swap_used_mb > swap_used_mb:
        reasons.append(SWAP_IN_USE)
    if info.available_percent < min_available_percent or info.available_mb < min_available_mb:
        reasons.append(LOW_MEMORY)
    return reasons


def describe(info: MemInfo, reasons: list[str], swap_kind: str | None) -> str:
    """One line for logs and `watus status`."""
    parts = []
    if SWAP_IN_USE in reasons:
        kind = f" ({swap_kind})" if swap_kind else ""
        parts.append(f"swap in use: {info.swap_used_mb:.0f} of {info.swap_total_mb:.0f} MB{kind}")
    if LOW_MEMORY in reasons:
        parts.append(f"low memory: {info.available_mb:.0f} MB available ({info.available_percent:.1f} % of "
                     f"{info.total_mb:.0f} MB)")
    if not parts:
        return (f"ok: {info.available_mb:.0f} MB available ({info.available_percent:.0f} %), "
                f"swap {info.swap_used_mb:.0f} MB used")
    return "; ".join(parts)


class SwapWatch:
    """Checks memory on demand (each `/health` call, each `watus status`) and logs state changes once.

    `check()` is cheap (reads three small /proc files) and thread-safe. The first check logs only when
    the state is not ok; after that a warning is logged each time the set of reasons changes, and one
    info line when it returns to ok.
    """

    def __init__(self, *, swap_used_mb: float = 0.0, min_available_percent: float = 10.0,
                 min_available_mb: float = 2048.0, meminfo: Path = MEMINFO, swaps: Path = SWAPS,
                 vmstat: Path = VMSTAT, name: str = "") -> None:
        if swap_used_mb < 0 or min_available_mb < 0 or not 0 <= min_available_percent <= 100:
            raise ValueError("thresholds must be ≥ 0 (and the percentage ≤ 100)")
        self.swap_used_mb = swap_used_mb
        self.min_available_percent = min_available_percent
        self.min_available_mb = min_available_mb
        self._paths = (meminfo, swaps, vmstat)
        self._prefix = f"{name}: " if name else ""
        self._lock = threading.Lock()
        self._state: tuple[str, ...] | None = None
        self._last_paging: tuple[float, int, int] | None = None

    def thresholds(self) -> dict[str, float]:
        return {"swap_used_mb": self.swap_used_mb, "min_available_percent": self.min_available_percent,
                "min_available_mb": self.min_available_mb}

    def check(self, meminfo_text: str | None = None, *, swaps_text: str | None = None,
              vmstat_text: str | None = None, now: float | None = None) -> dict[str, Any]:
        """Read (or parse the given texts), assess, log a state change, and return the dict for /health.

        Keys: status (`ok`, `warn`, or `unknown` when nothing could be read), reasons, message, the
        figures in MB, swap_kind, swap_in_per_s/swap_out_per_s (pages per second since the previous
        check; None on the first), thresholds and source.
        """
        meminfo_path, swaps_path, vmstat_path = self._paths
        if meminfo_text is not None:
            info: MemInfo | None = parse_meminfo(meminfo_text)
            source = "text"
        else:
            info, source = read_meminfo(meminfo_path)
            swaps_text = _read(swaps_path)
            vmstat_text = _read(vmstat_path)
        swap_kind = parse_swaps(swaps_text) if swaps_text is not None else None
        paging = parse_vmstat_swap(vmstat_text) if vmstat_text is not None else None
        t = time.monotonic() if now is None else now
        with self._lock:
            rates = self._rates(t, paging)
            if info is None:
                return {"status": "unknown", "reasons": [], "message": "memory figures unavailable",
                        "source": source, "thresholds": self.thresholds()}
            reasons = assess(info, swap_used_mb=self.swap_used_mb,
                             min_available_percent=self.min_available_percent,
                             min_available_mb=self.min_available_mb)
            message = describe(info, reasons, swap_kind)
            self._log_change(tuple(reasons), message)
        return {
            "status": "warn" if reasons else "ok",
            "reasons": reasons,
            "message": message,
            "mem_total_mb": round(info.total_mb, 1),
            "mem_available_mb": round(info.available_mb, 1),
            "mem_available_percent": round(info.available_percent, 1),
            "swap_total_mb": round(info.swap_total_mb, 1),
            "swap_used_mb": round(info.swap_used_mb, 1),
            "swap_kind": swap_kind,
            "swap_in_per_s": rates[0],
            "swap_out_per_s": rates[1],
            "thresholds": self.thresholds(),
            "source": source,
        }

    def _rates(self, t: float, paging: tuple[int, int] | None) -> tuple[float | None, float | None]:
        previous = self._last_paging
        self._last_paging = (t, paging[0], paging[1]) if paging is not None else None
        if paging is None or previous is None or t <= previous[0]:
            return None, None
        dt = t - previous[0]
        return round(max(0, paging[0] - previous[1]) / dt, 1), round(max(0, paging[1] - previous[2]) / dt, 1)

    def _log_change(self, state: tuple[str, ...], message: str) -> None:
        previous, self._state = self._state, state
        if state == previous:
            return
        if state:
            log.warning("%smemory %s", self._prefix, message)
        elif previous:  # back to ok after a warning; a first check that is ok stays quiet
            log.info("%smemory back to normal: %s", self._prefix, message)
