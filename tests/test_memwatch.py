"""watus/core/memwatch.py: /proc/meminfo parsing, thresholds, swap kind and rate, logging once per change.

The texts are what a Jetson AGX Orin 64 GB (zram swap, JetPack 6) and an Orin Nano 8 GB print; the
last tests read this machine's real /proc files and the psutil fallback.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from watus.core.memwatch import (
    LOW_MEMORY,
    SWAP_IN_USE,
    SwapWatch,
    assess,
    parse_meminfo,
    parse_swaps,
    parse_vmstat_swap,
    read_meminfo,
)


def meminfo(total_kb: int, available_kb: int | None, swap_total_kb: int, swap_free_kb: int,
            free_kb: int = 1_000_000) -> str:
    lines = [f"MemTotal:       {total_kb} kB", f"MemFree:        {free_kb} kB"]
    if available_kb is not None:
        lines.append(f"MemAvailable:   {available_kb} kB")
    lines += ["Buffers:           40960 kB", "Cached:          2048000 kB", "SwapCached:            0 kB",
              f"SwapTotal:      {swap_total_kb} kB", f"SwapFree:       {swap_free_kb} kB",
              "HugePages_Total:       0", "Hugepagesize:       2048 kB", "DirectMap4k:  this is not a number"]
    return "\n".join(lines) + "\n"


ORIN_64 = meminfo(64_349_016, 57_812_345, 32_174_480, 32_174_480, free_kb=50_123_456)
ORIN_64_SWAPPING = meminfo(64_349_016, 3_145_728, 32_174_480, 31_150_480)  # 1000 MB of zram in use
NANO_8 = meminfo(7_757_000, 1_536_000, 3_878_000, 3_878_000)  # 19.8 % available, but under 2 GB
ZRAM_SWAPS = ("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
              "/dev/zram0                              partition\t2680604\t\t0\t\t5\n"
              "/dev/zram1                              partition\t2680604\t\t0\t\t5\n")


def test_parse_meminfo() -> None:
    info = parse_meminfo(ORIN_64)
    assert info.total_mb == pytest.approx(62_840.8, abs=0.1)  # tegrastats' "RAM x/62841MB"
    assert info.available_mb == pytest.approx(57_812_345 / 1024)
    assert info.swap_used_mb == 0 and info.available_percent == pytest.approx(89.84, abs=0.01)
    assert parse_meminfo(ORIN_64_SWAPPING).swap_used_mb == pytest.approx(1000.0)
    # Kernels before 3.14 have no MemAvailable: free + buffers + cached stands in.
    old = parse_meminfo(meminfo(8_000_000, None, 0, 0, free_kb=1_000_000))
    assert old.available_mb == pytest.approx((1_000_000 + 40_960 + 2_048_000) / 1024)
    with pytest.raises(ValueError):
        parse_meminfo("MemFree: 10 kB\n")


def test_thresholds() -> None:
    assert assess(parse_meminfo(ORIN_64)) == []
    assert assess(parse_meminfo(ORIN_64_SWAPPING)) == [SWAP_IN_USE, LOW_MEMORY]  # 4.9 % available
    assert assess(parse_meminfo(NANO_8)) == [LOW_MEMORY]  # above 10 % but below 2 GB
    assert assess(parse_meminfo(NANO_8), min_available_mb=1024) == []
    assert assess(parse_meminfo(ORIN_64_SWAPPING), swap_used_mb=2048, min_available_percent=4) == []


def test_swap_kind_and_paging_counters() -> None:
    assert parse_swaps(ZRAM_SWAPS) == "zram"
    assert parse_swaps(ZRAM_SWAPS + "/swapfile file 4194300 0 -2\n") == "zram+disk"
    assert parse_swaps("Filename Type Size Used Priority\n") is None
    assert parse_vmstat_swap("pgpgin 5\npswpin 120\npswpout 340\n") == (120, 340)
    assert parse_vmstat_swap("pgpgin 5\n") is None


def test_check_returns_the_health_dict_with_rates() -> None:
    watch = SwapWatch()
    first = watch.check(ORIN_64_SWAPPING, swaps_text=ZRAM_SWAPS, vmstat_text="pswpin 100\npswpout 1000\n", now=10.0)
    assert first["status"] == "warn" and first["reasons"] == [SWAP_IN_USE, LOW_MEMORY]
    assert first["swap_used_mb"] == 1000.0 and first["swap_kind"] == "zram"
    assert first["swap_in_per_s"] is None  # no previous reading yet
    assert "swap in use: 1000 of 31420 MB (zram)" in first["message"] and "low memory: 3072 MB" in first["message"]
    assert first["thresholds"] == {"swap_used_mb": 0.0, "min_available_percent": 10.0, "min_available_mb": 2048.0}
    second = watch.check(ORIN_64_SWAPPING, swaps_text=ZRAM_SWAPS, vmstat_text="pswpin 300\npswpout 1100\n", now=12.0)
    assert (second["swap_in_per_s"], second["swap_out_per_s"]) == (100.0, 50.0)
    ok = watch.check(ORIN_64)
    assert ok["status"] == "ok" and ok["reasons"] == [] and ok["message"].startswith("ok: 56457 MB available")
    with pytest.raises(ValueError):
        SwapWatch(min_available_percent=150)


def test_logs_once_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    watch = SwapWatch(name="llm")
    with caplog.at_level(logging.INFO, logger="watus.core.memwatch"):
        watch.check(ORIN_64)  # a healthy start says nothing
        assert caplog.records == []
        watch.check(NANO_8)
        watch.check(NANO_8)
        watch.check(NANO_8)
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert caplog.records[0].getMessage().startswith("llm: memory low memory: 1500 MB available")
        watch.check(ORIN_64_SWAPPING)  # a different set of reasons is a new state
        watch.check(ORIN_64)
        watch.check(ORIN_64)
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING, logging.INFO]
    assert "swap in use" in caplog.records[1].getMessage()
    assert caplog.records[2].getMessage().startswith("llm: memory back to normal: ok")


def test_this_machine_and_the_psutil_fallback(tmp_path: Path) -> None:
    real = SwapWatch().check()
    assert real["status"] in ("ok", "warn") and real["mem_total_mb"] > 0
    assert real["source"] == "/proc/meminfo"
    info, source = read_meminfo(tmp_path / "missing")
    assert source == "psutil" and info is not None and info.total_mb > 0
    fallback = SwapWatch(meminfo=tmp_path / "missing", swaps=tmp_path / "x", vmstat=tmp_path / "y").check()
    assert fallback["source"] == "psutil" and fallback["swap_kind"] is None
