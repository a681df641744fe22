"""System telemetry sampled while a benchmark runs: RAM, swap, CPU, GPU, power and temperatures.

A benchmark figure means little without the state of the machine that produced it: a Jetson that
swaps, throttles on temperature or runs in a low power mode decodes slower, and the same report then
shows why. On the robot the numbers come from NVIDIA's `tegrastats` (the only source of GPU load, EMC
and power rails on an integrated GPU); on any other box `psutil` gives RAM, swap, CPU and whatever
temperatures the kernel exposes, and GPU figures stay None. Missing tools never raise: a benchmark
must not fail because telemetry could not be read.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import IO, Any

import psutil

log = logging.getLogger(__name__)

#: tegrastats prints -256C for a thermal zone that is switched off.
_TEMP_OFF_BELOW_C = -200.0
#: Rails that already measure the module's whole input power (preferred over a sum of rails).
_TOTAL_POWER_RAILS = ("VDD_IN", "POM_5V_IN")

_RAM_RE = re.compile(r"\bRAM (\d+)/(\d+)MB(?: \(lfb (\d+)x(\d+)MB\))?")
_SWAP_RE = re.compile(r"\bSWAP (\d+)/(\d+)MB(?: \(cached (\d+)MB\))?")
_CPU_RE = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE_RE = re.compile(r"^(\d+(?:\.\d+)?)%(?:@(\d+))?$")
_GR3D_RE = re.compile(r"\bGR3D_FREQ (\d+(?:\.\d+)?)%(?:@\[?([\d,]+)\]?)?")
_EMC_RE = re.compile(r"\bEMC_FREQ (\d+(?:\.\d+)?)%(?:@(\d+))?")
_TEMP_RE = re.compile(r"\b([A-Za-z][\w.]*)@(-?\d+(?:\.\d+)?)C\b")
# `NAME cur/avg` or `NAME cur/avg/max`, in mW (JetPack 5/6) or unitless mW (older POM_* rails). The
# lookahead keeps `RAM 5012/62841MB` and `IRAM 0/252kB` out: their numbers end in a unit.
_POWER_RE = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_NOT_POWER = frozenset({"RAM", "SWAP", "IRAM"})


@dataclass(frozen=True)
class PowerRail:
    """One power rail as tegrastats reports it: current, running average and (newer format) max."""

    cur_mw: float
    avg_mw: float
    max_mw: float | None = None


@dataclass
class TelemetrySample:
    """One reading of the machine. Fields a source cannot give stay None (or empty)."""

    t: float
    source: str
    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    swap_used_mb: float | None = None
    swap_total_mb: float | None = None
    #: Per core; None where the core is offline (`off` in tegrastats).
    cpu_percent: list[float | None] = field(default_factory=list)
    cpu_freq_mhz: list[int | None] = field(default_factory=list)
    #: Mean over the online cores.
    cpu_total_percent: float | None = None
    gpu_percent: float | None = None
    gpu_freq_mhz: list[int] = field(default_factory=list)
    emc_percent: float | None = None
    emc_freq_mhz: int | None = None
    #: Celsius per sensor; None where the sensor is off.
    temps_c: dict[str, float | None] = field(default_factory=dict)
    power: dict[str, PowerRail] = field(default_factory=dict)

    @property
    def total_power_mw(self) -> float | None:
        """Module input power: the input rail where one exists, else the sum of the reported rails."""
        for name in _TOTAL_POWER_RAILS:
            if name in self.power:
                return self.power[name].cur_mw
        if not self.power:
            return None
        return sum(r.cur_mw for r in self.power.values())


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _parse_cpu(body: str) -> tuple[list[float | None], list[int | None]]:
    loads: list[float | None] = []
    freqs: list[int | None] = []
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        m = _CORE_RE.match(item)
        if m is None:  # `off`, or a form we do not know: the core counts as offline
            loads.append(None)
            freqs.append(None)
            continue
        loads.append(float(m.group(1)))
        freqs.append(int(m.group(2)) if m.group(2) else None)
    return loads, freqs


def parse_tegrastats(line: str, t: float | None = None) -> TelemetrySample | None:
    """Parse one `tegrastats` line (JetPack 4 to 6 formats); None if the line holds none of its fields.

    Handles an optional leading timestamp, `GR3D_FREQ 0%@[305,305]` (per GPC, JetPack 6) and
    `GR3D_FREQ 0%@305`, cores that are `off`, `-256C` for sensors that are off, and power rails as
    `NAME cur/avg` or `NAME cur/avg/max` with or without the `mW` unit.
    """
    sample = TelemetrySample(t=time.monotonic() if t is None else t, source="tegrastats")
    found = False
    if m := _RAM_RE.search(line):
        sample.ram_used_mb, sample.ram_total_mb = float(m.group(1)), float(m.group(2))
        found = True
    if m := _SWAP_RE.search(line):
        sample.swap_used_mb, sample.swap_total_mb = float(m.group(1)), float(m.group(2))
        found = True
    if m := _CPU_RE.search(line):
        sample.cpu_percent, sample.cpu_freq_mhz = _parse_cpu(m.group(1))
        sample.cpu_total_percent = _mean([v for v in sample.cpu_percent if v is not None])
        found = True
    if m := _GR3D_RE.search(line):
        sample.gpu_percent = float(m.group(1))
        sample.gpu_freq_mhz = [int(f) for f in m.group(2).split(",") if f] if m.group(2) else []
        found = True
    if m := _EMC_RE.search(line):
        sample.emc_percent = float(m.group(1))
        sample.emc_freq_mhz = int(m.group(2)) if m.group(2) else None
        found = True
    for name, value in _TEMP_RE.findall(line):
        celsius = float(value)
        sample.temps_c[name] = None if celsius <= _TEMP_OFF_BELOW_C else celsius
        found = True
    for name, cur, avg, peak in _POWER_RE.findall(line):
        if name in _NOT_POWER:
            continue
        sample.power[name] = PowerRail(float(cur), float(avg), float(peak) if peak else None)
        found = True
    return sample if found else None


def sample_psutil(t: float | None = None) -> TelemetrySample:
    """A reading from psutil. CPU % is measured since the previous call (prime it once first)."""
    sample = TelemetrySample(t=time.monotonic() if t is None else t, source="psutil")
    with contextlib.suppress(Exception):
        vm = psutil.virtual_memory()
        sample.ram_used_mb = (vm.total - vm.available) / 2**20
        sample.ram_total_mb = vm.total / 2**20
    with contextlib.suppress(Exception):
        sw = psutil.swap_memory()
        sample.swap_used_mb, sample.swap_total_mb = sw.used / 2**20, sw.total / 2**20
    with contextlib.suppress(Exception):
        per_core = [float(v) for v in psutil.cpu_percent(percpu=True)]
        sample.cpu_percent = list(per_core)
        sample.cpu_total_percent = _mean(per_core)
    sample.temps_c = _psutil_temperatures()
    return sample


def _psutil_temperatures() -> dict[str, float | None]:
    """The hottest reading of each sensor chip, where the platform offers any."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return {}
    try:
        chips: dict[str, Any] = reader()
    except Exception:  # some kernels expose unreadable zones; telemetry must not fail the benchmark
        return {}
    temps: dict[str, float | None] = {}
    for chip, entries in chips.items():
        readings = [float(e.current) for e in entries if e.current is not None]
        if readings:
            temps[chip] = max(readings)
    return temps


@dataclass(frozen=True)
class MeanMax:
    mean: float
    max: float


def _mean_max(values: list[float | None]) -> MeanMax | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return MeanMax(mean=sum(present) / len(present), max=max(present))


@dataclass
class TelemetrySummary:
    """Mean and max of each figure over a sampled interval; None where no sample had it."""

    source: str
    samples: int
    duration_s: float
    ram_total_mb: float | None = None
    ram_used_mb: MeanMax | None = None
    swap_used_mb: MeanMax | None = None
    cpu_percent: MeanMax | None = None
    gpu_percent: MeanMax | None = None
    emc_percent: MeanMax | None = None
    #: Per rail plus `total` (see `TelemetrySample.total_power_mw`).
    power_mw: dict[str, MeanMax] = field(default_factory=dict)
    temps_c: dict[str, MeanMax] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_samples(samples: list[TelemetrySample], source: str, duration_s: float) -> TelemetrySummary:
    """Reduce samples to mean/max per figure."""
    summary = TelemetrySummary(source=source, samples=len(samples), duration_s=duration_s)
    if not samples:
        return summary
    summary.ram_total_mb = next((s.ram_total_mb for s in reversed(samples) if s.ram_total_mb), None)
    summary.ram_used_mb = _mean_max([s.ram_used_mb for s in samples])
    summary.swap_used_mb = _mean_max([s.swap_used_mb for s in samples])
    summary.cpu_percent = _mean_max([s.cpu_total_percent for s in samples])
    summary.gpu_percent = _mean_max([s.gpu_percent for s in samples])
    summary.emc_percent = _mean_max([s.emc_percent for s in samples])
    rails = sorted({name for s in samples for name in s.power})
    for rail in rails:
        if mm := _mean_max([s.power[rail].cur_mw if rail in s.power else None for s in samples]):
            summary.power_mw[rail] = mm
    if total := _mean_max([s.total_power_mw for s in samples]):
        summary.power_mw["total"] = total
    for sensor in sorted({name for s in samples for name in s.temps_c}):
        if mm := _mean_max([s.temps_c.get(sensor) for s in samples]):
            summary.temps_c[sensor] = mm
    return summary


class TelemetrySampler:
    """Samples the machine in a background thread while the `with` block runs.

    `tegrastats --interval <ms>` where it is on PATH (Jetson), else psutil every `interval_s`. If
    tegrastats cannot start or dies before giving a line, the sampler falls back to psutil.
    """

    def __init__(self, interval_s: float = 0.5, *, use_tegrastats: bool | None = None,
                 max_samples: int | None = None) -> None:
        self.interval_s = max(0.05, interval_s)
        self._tegrastats = shutil.which("tegrastats") if use_tegrastats in (None, True) else None
        # A benchmark keeps every sample; a long-running process (the dashboard) keeps the newest only.
        self._samples: collections.deque[TelemetrySample] = collections.deque(maxlen=max_samples)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._source = "none"
        self._started = 0.0
        self._stopped: float | None = None

    @property
    def source(self) -> str:
        """`tegrastats`, `psutil`, or `none` before start."""
        return self._source

    @property
    def samples(self) -> list[TelemetrySample]:
        with self._lock:
            return list(self._samples)

    def latest(self) -> TelemetrySample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def __enter__(self) -> TelemetrySampler:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._started = time.monotonic()
        self._stopped = None
        if self._tegrastats and self._start_tegrastats(self._tegrastats):
            self._source = "tegrastats"
            target = self._read_tegrastats
        else:
            self._source = "psutil"
            with contextlib.suppress(Exception):
                psutil.cpu_percent(percpu=True)  # primes the counters the first sample is measured from
            target = self._poll_psutil
        self._thread = threading.Thread(target=target, name="telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        proc, self._proc = self._proc, None
        if proc is not None:
            _end_process(proc)
        self._thread.join(timeout=5.0)
        self._thread = None
        self._stopped = time.monotonic()
        if self._source == "psutil":
            self._add(sample_psutil())  # covers the tail since the last tick, so short blocks get a sample

    def summary(self) -> TelemetrySummary:
        end = self._stopped if self._stopped is not None else time.monotonic()
        duration = end - self._started if self._started else 0.0
        return summarize_samples(self.samples, self._source, duration)

    def _add(self, sample: TelemetrySample) -> None:
        with self._lock:
            self._samples.append(sample)

    def _start_tegrastats(self, exe: str) -> bool:
        interval_ms = max(10, round(self.interval_s * 1000))
        try:
            self._proc = subprocess.Popen([exe, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as e:
            log.warning("tegrastats could not start (%s); sampling with psutil", e)
            self._proc = None
            return False
        return True

    def _read_tegrastats(self) -> None:
        proc = self._proc
        stdout: IO[str] | None = proc.stdout if proc is not None else None
        got_any = False
        if stdout is not None:
            try:
                for line in stdout:
                    sample = parse_tegrastats(line)
                    if sample is not None:
                        got_any = True
                        self._add(sample)
                    if self._stop.is_set():
                        break
            except (OSError, ValueError):  # the pipe closes under us when stop() ends the process
                pass
        if not got_any and not self._stop.is_set():
            log.warning("tegrastats gave no readings; sampling with psutil")
            self._source = "psutil"
            with contextlib.suppress(Exception):
                psutil.cpu_percent(percpu=True)
            self._poll_psutil()

    def _poll_psutil(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._add(sample_psutil())


def _end_process(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        proc.terminate()
    try:
        proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)
