"""Per-process sampling for `watus bench soak`: RSS, open file descriptors and threads, every few seconds.

psutil (a dependency of Watus) reads them from `/proc/<pid>/status`, `/proc/<pid>/fd` and the thread count
on Linux, and the same calls work on macOS. Each figure is the sum over the process and its children, so a
service that forks a helper (a llama.cpp server, a multiprocessing worker) cannot hide memory there. The
sampler also reads the machine's CPU use, because a soak on a shared machine runs slower (fewer turns)
when other work competes, and the report says how much did.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

from watus.bench.soak_verdict import ProcSample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachineSample:
    """The whole machine at one reading: CPU % (of all cores) and the 1-minute load average."""

    t_s: float
    cpu_percent: float
    load1: float | None


@dataclass
class _Tracked:
    name: str
    pid: int
    procs: dict[int, psutil.Process] = field(default_factory=dict)  # kept: cpu_percent needs the same object
    gone: bool = False


def read_tree(tracked: _Tracked) -> tuple[float, int, int, float] | None:
    """(RSS MB, fds, threads, CPU % of one core) of the process and its children; None once it has exited."""
    try:
        root = tracked.procs.get(tracked.pid) or psutil.Process(tracked.pid)
        tracked.procs[tracked.pid] = root
        if not root.is_running() or root.status() == psutil.STATUS_ZOMBIE:
            return None
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    rss, fds, threads, cpu = 0, 0, 0, 0.0
    alive: dict[int, psutil.Process] = {}
    for p in members:
        known = tracked.procs.get(p.pid, p)
        with contextlib.suppress(psutil.Error):  # a child that ended between the listing and the reading
            with known.oneshot():
                rss += known.memory_info().rss
                fds += known.num_fds()
                threads += known.num_threads()
                cpu += known.cpu_percent(None)  # the first reading of a new process is 0.0
            alive[p.pid] = known
    tracked.procs = alive
    return rss / 2**20, fds, threads, cpu


class ProcSampler:
    """Samples named processes every `interval_s` in a thread until `stop()`; `t_s` counts from `start()`."""

    def __init__(self, pids: Mapping[str, int], interval_s: float = 5.0) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s
        self._tracked = [_Tracked(name, pid) for name, pid in pids.items()]
        self.samples: dict[str, list[ProcSample]] = {name: [] for name in pids}
        self.machine: list[MachineSample] = []
        self._lock = threading.Lock()
        self._sampling = threading.Lock()  # one reading at a time: the thread's and a caller's `sample_once`
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> ProcSampler:
        self._t0 = time.monotonic()
        psutil.cpu_percent(None)  # the machine's first reading is against this instant
        self._thread.start()
        return self

    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0

    def exited(self) -> list[str]:
        """Names of the processes found gone."""
        with self._lock:
            return [t.name for t in self._tracked if t.gone]

    def snapshot(self) -> dict[str, list[ProcSample]]:
        with self._lock:
            return {name: list(series) for name, series in self.samples.items()}

    def sample_once(self) -> None:
        """One reading of every process (and of the machine)."""
        with self._sampling:
            self._sample()

    def _sample(self) -> None:
        t = self.elapsed_s()
        readings = {tr.name: (tr, read_tree(tr)) for tr in self._tracked if not tr.gone}
        load = None
        with contextlib.suppress(OSError, AttributeError):
            load = psutil.getloadavg()[0]
        machine = MachineSample(round(t, 2), psutil.cpu_percent(None), load)
        with self._lock:
            self.machine.append(machine)
            for name, (tr, reading) in readings.items():
                if reading is None:
                    tr.gone = True
                    log.error("soak: %s (pid %d) is gone", name, tr.pid)
                    continue
                rss, fds, threads, cpu = reading
                self.samples[name].append(ProcSample(round(t, 2), round(rss, 2), fds, threads, round(cpu, 1)))

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            self.sample_once()
            if self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started))):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    def __enter__(self) -> ProcSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
