"""Telemetry: the tegrastats parser on lines in each JetPack format, and the sampler's fallbacks.

This machine has no Jetson. The parser is tested on real-looking lines written here; the sampler's
tegrastats path is driven by a stand-in `tegrastats` script that prints such lines (hardware this
machine lacks), and its psutil path on the real machine.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from watus.core import telemetry
from watus.core.telemetry import PowerRail, TelemetrySampler, parse_tegrastats, summarize_samples

# AGX Orin, JetPack 6 (L4T r36): GPU load per GPC, sensors that are off at -256C.
ORIN_JP6 = (
    "RAM 5012/62841MB (lfb 1x4MB) SWAP 0/31420MB (cached 0MB) CPU [2%@729,1%@729,0%@729,0%@729,"
    "off,off,off,off,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@3199 GR3D_FREQ 0%@[305,305] "
    "NVENC off NVDEC off NVJPG off NVJPG1 off VIC off OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off "
    "APE 174 cpu@45.5C soc2@44.1C soc0@45.218C gpu@-256C tj@46.2C soc1@44.343C "
    "VDD_GPU_SOC 1995mW/1995mW VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 3621mW/3621mW"
)
# Same board under an LLM, with a leading timestamp and the cur/avg/max rail form.
ORIN_LOADED = (
    "11-24-2025 13:02:32 RAM 5630/62841MB (lfb 2x4MB) SWAP 0/31420MB (cached 0MB) "
    "CPU [12%@2201,8%@2201,4%@2201,3%@2201,9%@2201,2%@2201,1%@2201,0%@2201,off,off,off,off] "
    "EMC_FREQ 45%@3199 GR3D_FREQ 97%@[1300,1300] cpu@60.1C soc2@58.9C gpu@61.2C tj@61.5C "
    "VDD_GPU_SOC 33012mW/31500mW/35020mW VDD_CPU_CV 2800mW/2650mW/3100mW VIN_SYS_5V0 6100mW/6000mW/6300mW"
)
# AGX Xavier, JetPack 5: one GPU frequency, rails named GPU/CPU/SOC.
XAVIER_JP5 = (
    "RAM 2399/31011MB (lfb 6286x4MB) SWAP 0/15505MB (cached 0MB) CPU [1%@1190,0%@1190,0%@1190,0%@1190,"
    "off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@1377 VIC_FREQ 115 APE 150 AUX@34C CPU@35.5C "
    "thermal@34.85C AO@35C GPU@34.5C PMIC@50C GPU 0mW/0mW CPU 155mW/155mW SOC 774mW/774mW CV 0mW/0mW "
    "VDDRQ 155mW/155mW SYS5V 1531mW/1531mW"
)
# Nano, JetPack 4: IRAM, unitless POM_* rails with an input rail.
NANO_JP4 = (
    "RAM 1418/3956MB (lfb 5x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [9%@102,1%@102,0%@102,0%@102] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@22C CPU@24.5C "
    "PMIC@50C GPU@22.5C AO@30.5C thermal@23.25C POM_5V_IN 1815/1815 POM_5V_GPU 0/0 POM_5V_CPU 242/242"
)
# Orin Nano, JetPack 6: a VDD_IN module input rail.
ORIN_NANO = (
    "RAM 2101/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,2%@729,0%@729,0%@729,0%@729,"
    "0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0% cpu@48.531C soc2@47.562C soc0@48.5C gpu@-256C tj@48.531C "
    "soc1@48.281C VDD_IN 4880mW/4880mW VDD_CPU_GPU_CV 566mW/566mW VDD_SOC 1412mW/1412mW"
)


def test_orin_jetpack6_line() -> None:
    s = parse_tegrastats(ORIN_JP6, t=1.0)
    assert s is not None and s.source == "tegrastats" and s.t == 1.0
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (5012, 62841, 0, 31420)
    assert len(s.cpu_percent) == 12 and s.cpu_percent[4] is None and s.cpu_freq_mhz[0] == 729
    assert s.cpu_total_percent == pytest.approx(3 / 8)  # offline cores do not count
    assert s.gpu_percent == 0 and s.gpu_freq_mhz == [305, 305]
    assert (s.emc_percent, s.emc_freq_mhz) == (0, 3199)
    assert s.temps_c["cpu"] == 45.5 and s.temps_c["tj"] == 46.2 and s.temps_c["gpu"] is None
    assert s.power == {"VDD_GPU_SOC": PowerRail(1995, 1995), "VDD_CPU_CV": PowerRail(399, 399),
                       "VIN_SYS_5V0": PowerRail(3621, 3621)}
    assert s.total_power_mw == 1995 + 399 + 3621  # no input rail: the sum of the rails


def test_loaded_line_with_timestamp_and_max() -> None:
    s = parse_tegrastats(ORIN_LOADED)
    assert s is not None
    assert s.gpu_percent == 97 and s.gpu_freq_mhz == [1300, 1300] and s.emc_percent == 45
    assert s.power["VDD_GPU_SOC"] == PowerRail(33012, 31500, 35020)
    assert s.ram_used_mb == 5630 and s.temps_c["gpu"] == 61.2


def test_xavier_jetpack5_line() -> None:
    s = parse_tegrastats(XAVIER_JP5)
    assert s is not None
    assert s.gpu_percent == 0 and s.gpu_freq_mhz == [1377]
    assert s.temps_c["CPU"] == 35.5 and s.temps_c["thermal"] == 34.85
    assert s.power["CPU"] == PowerRail(155, 155) and s.power["SYS5V"].cur_mw == 1531
    assert s.cpu_percent[:4] == [1, 0, 0, 0] and s.cpu_percent[4:] == [None] * 4


def test_nano_jetpack4_line_input_rail_is_total() -> None:
    s = parse_tegrastats(NANO_JP4)
    assert s is not None
    assert "IRAM" not in s.power and "RAM" not in s.power
    assert s.power["POM_5V_IN"] == PowerRail(1815, 1815)
    assert s.total_power_mw == 1815
    assert s.gpu_freq_mhz == [76] and s.ram_total_mb == 3956


def test_orin_nano_gpu_without_frequency() -> None:
    s = parse_tegrastats(ORIN_NANO)
    assert s is not None
    assert s.gpu_percent == 0 and s.gpu_freq_mhz == []
    assert s.total_power_mw == 4880
    assert s.temps_c["soc0"] == 48.5 and s.temps_c["gpu"] is None


@pytest.mark.parametrize("line", ["", "tegrastats: permission denied", "Usage: tegrastats [-option]"])
def test_lines_without_fields(line: str) -> None:
    assert parse_tegrastats(line) is None


def test_summary_of_parsed_lines() -> None:
    samples = [parse_tegrastats(line, t=float(i)) for i, line in enumerate((ORIN_JP6, ORIN_LOADED))]
    assert all(s is not None for s in samples)
    summary = summarize_samples([s for s in samples if s is not None], "tegrastats", 2.0)
    assert summary.samples == 2 and summary.ram_total_mb == 62841
    assert summary.gpu_percent is not None and summary.gpu_percent.mean == 48.5 and summary.gpu_percent.max == 97
    assert summary.ram_used_mb is not None and summary.ram_used_mb.max == 5630
    assert summary.power_mw["total"].max == 33012 + 2800 + 6100
    assert summary.temps_c["gpu"].max == 61.2 and summary.temps_c["gpu"].mean == 61.2  # -256C left out
    assert summary.as_dict()["gpu_percent"] == {"mean": 48.5, "max": 97.0}


def test_psutil_sampler_gives_sane_numbers() -> None:
    with TelemetrySampler(interval_s=0.05, use_tegrastats=False) as sampler:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            sum(i * i for i in range(2000))  # some CPU work to measure
    summary = sampler.summary()
    assert summary.source == "psutil" and summary.samples >= 3
    assert summary.ram_total_mb is not None and summary.ram_used_mb is not None
    assert 0 < summary.ram_used_mb.mean <= summary.ram_used_mb.max <= summary.ram_total_mb
    assert summary.cpu_percent is not None and 0 <= summary.cpu_percent.mean <= summary.cpu_percent.max <= 100
    assert summary.swap_used_mb is not None and summary.swap_used_mb.max >= 0
    assert summary.gpu_percent is None and summary.power_mw == {}
    assert 0.25 < summary.duration_s < 2.0


def test_short_block_still_gets_a_sample() -> None:
    with TelemetrySampler(interval_s=5.0, use_tegrastats=False) as sampler:
        time.sleep(0.05)
    assert sampler.summary().samples == 1


def test_missing_tegrastats_binary_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(telemetry.shutil, "which", lambda name: str(tmp_path / "gone" / name))
    with TelemetrySampler(interval_s=0.05) as sampler:
        time.sleep(0.15)
    assert sampler.source == "psutil" and sampler.summary().samples >= 1


def _fake_tegrastats(tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "bin" / "tegrastats"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe.parent


def test_tegrastats_process_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bindir = _fake_tegrastats(tmp_path, f"while true; do echo '{ORIN_LOADED}'; sleep 0.05; done\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with TelemetrySampler(interval_s=0.05) as sampler:
        time.sleep(0.4)
    summary = sampler.summary()
    assert summary.source == "tegrastats" and summary.samples >= 2
    assert summary.gpu_percent is not None and summary.gpu_percent.max == 97


def test_tegrastats_that_prints_nothing_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bindir = _fake_tegrastats(tmp_path, "echo 'tegrastats: permission denied' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with TelemetrySampler(interval_s=0.05) as sampler:
        time.sleep(0.3)
    assert sampler.source == "psutil"
    summary = sampler.summary()
    assert summary.samples >= 1 and summary.cpu_percent is not None and summary.gpu_percent is None


def test_watus_status_shows_tegrastats_on_a_jetson(tmp_path: Path) -> None:
    """`watus status` reads tegrastats where it exists (a stand-in here: no Jetson on this machine)."""
    import subprocess
    import sys

    from tests.helpers import ROOT, free_port

    bindir = _fake_tegrastats(tmp_path, f"while true; do echo '{ORIN_LOADED}'; sleep 0.1; done\n")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200",
           "WATUS_LLM_PORT": str(free_port())}
    r = subprocess.run([sys.executable, "-m", "watus.cli", "status", "--only", "llm"], capture_output=True,
                       text=True, timeout=60, cwd=ROOT, env=env)
    assert r.returncode == 1  # no LLM server runs
    assert "GPU 97 %" in r.stdout and "power" in r.stdout
