"""The four Watus processes as the CLI sees them: how to start each, where it answers, and its health.

`watus up`, `status` and `doctor` work from this table, so a port or module changes in one place. The
URLs follow each service's own settings (`WATUS_LLM_PORT`, ...), the same env vars the services read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from watus.core.config import DEFAULT_PORTS

#: How long a stopped process may take to exit cleanly before SIGKILL (systemd's `TimeoutStopSec`).
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    env_prefix: str
    default_port: int

    def url(self, env: dict[str, str] | None = None) -> str:
        source = os.environ if env is None else env
        host = source.get(f"{self.env_prefix}HOST", "127.0.0.1")
        port = source.get(f"{self.env_prefix}PORT", str(self.default_port))
        return f"http://{host}:{port}"


SERVICES: tuple[Service, ...] = (
    Service("llm", "trt_server", "WATUS_LLM_", DEFAULT_PORTS["llm"]),
    Service("vision", "vision", "WATUS_VISION_", DEFAULT_PORTS["vision"]),
    Service("audio", "audio", "WATUS_AUDIO_", DEFAULT_PORTS["audio"]),
    Service("agent", "watus", "WATUS_AGENT_", DEFAULT_PORTS["agent"]),
)
BY_NAME = {s.name: s for s in SERVICES}


@dataclass
class Health:
    name: str
    url: str
    ok: bool
    status: str
    body: dict[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None


async def check(service: Service, client: httpx.AsyncClient, env: dict[str, str] | None = None) -> Health:
    url = service.url(env)
    start = time.perf_counter()
    try:
        r = await client.get(url + "/health")
    except httpx.HTTPError as e:
        return Health(service.name, url, False, f"down ({type(e).__name__})")
    ms = (time.perf_counter() - start) * 1000
    try:
        body = r.json()
    except ValueError:
        body = {}
    status = str(body.get("status", r.status_code)) if isinstance(body, dict) else str(r.status_code)
    return Health(service.name, url, r.status_code == 200, status, body if isinstance(body, dict) else {}, ms)


async def check_all(names: list[str] | None = None, timeout_s: float = 2.0) -> list[Health]:
    chosen = [BY_NAME[n] for n in names] if names else list(SERVICES)
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        return list(await asyncio.gather(*(check(s, client) for s in chosen)))


def _dies_with(parent: int) -> Callable[[], None]:
    """What a child runs before exec on Linux: SIGTERM when `parent` dies, even by SIGKILL.

    The children run in sessions of their own (Ctrl-C in the terminal reaches `watus up` only, which
    stops them in order), so nothing else would stop them if `watus up` itself were killed: they would
    keep their ports and their CPU, and a new `watus up` would find "already answers" services.
    """

    def run() -> None:
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # it died before the line above: nothing would tell this child
            os._exit(1)

    return run


@dataclass
class Managed:
    """A process started by `watus up`."""

    service: Service
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", self.service.module], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_dies_with(os.getpid()) if sys.platform == "linux" else None)
        self.started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after `timeout_s` (systemd's `TimeoutStopSec`: the LLM server drains first)."""
        self.terminate()
        self.wait_or_kill(time.monotonic() + timeout_s)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def wait_or_kill(self, deadline: float) -> None:
        """Wait for the process to exit until `deadline` (time.monotonic()), then SIGKILL it."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stop_all(procs: list[Managed], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop the agent first (it stops asking the others), then all the others at once, each given
    `timeout_s` to exit cleanly, as systemd stops a target: the whole stop takes at most 2 × `timeout_s`."""
    for group in ([m for m in procs if m.service.name == "agent"], [m for m in procs if m.service.name != "agent"]):
        for m in group:
            m.terminate()
        deadline = time.monotonic() + timeout_s
        for m in group:
            m.wait_or_kill(deadline)


def security_checks() -> list[tuple[str, bool, str]]:
    """`watus doctor`'s lines on how each process is guarded: where it listens and whether a key is needed.

    A process that would refuse to start (off loopback, no key, not allowed to be open) is a problem.
    """
    from pydantic import ValidationError

    from watus.cli.settings_catalog import SERVICE_SETTINGS
    from watus.core.security import bind_refusal, is_loopback

    lines = []
    for name, cls in SERVICE_SETTINGS.items():
        try:
            settings = cls()
        except ValidationError as e:
            lines.append((f"{name} settings", False, f"fix the {cls.env_prefix()}* settings: {e.errors()[0]['msg']}"))
            continue
        host, port = getattr(settings, "host", "127.0.0.1"), getattr(settings, "port", 0)
        guard = "API key required" if settings.key() else "no API key"
        where = "loopback only" if is_loopback(host) else "reachable from the network"
        refusal = bind_refusal(name, settings, host, port)
        lines.append((f"{name} listens on {host}:{port} ({where}), {guard}", refusal is None,
                      f"set {cls.env_prefix()}API_KEY or WATUS_API_KEY (it would refuse to start)"))
    return lines


def language_check() -> tuple[str, bool, str] | None:
    """`watus doctor`'s line on the robot's language: Polish with the bundled 135M model is a problem (it
    writes Polish-looking words that mean nothing, README "Models"); None where there is nothing to say."""
    from pydantic import ValidationError

    from trt_server.settings import EngineKind, LLMSettings
    from watus.agent.settings import AgentSettings, Language

    try:
        agent, llm = AgentSettings(), LLMSettings()
    except ValidationError:
        return None  # security_checks reports settings that do not load
    if agent.language is not Language.pl:
        return None
    local = agent.llm_url.rstrip("/").endswith(f":{llm.port}") and "127.0.0.1" in agent.llm_url
    bundled = llm.engine is EngineKind.llamacpp and llm.model_path is None
    return ("robot language: Polish" + (" with the bundled SmolLM2-135M" if local and bundled else ""),
            not (local and bundled), "the 135M CPU model does not speak Polish: set WATUS_LLM_MODEL_PATH to a "
            "larger multilingual GGUF, or WATUS_AGENT_LLM_URL to a server that has one")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url.rstrip("/") + "/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def ensure_service(name: str, url: str, start: bool, log_path: Path, console: Console, err: Console,
                   extra_env: dict[str, str] | None = None, timeout_s: float = 180.0) -> Iterator[bool]:
    """Use the service at `url`, or start it there (with a spinner) and stop it afterwards.

    Yields whether this call started it. `extra_env` configures a started one (e.g. a WAV microphone).
    """
    if healthy(url):
        yield False
        return
    service = BY_NAME[name]
    if not start:
        err.print(f"[red]No {name} service at {url}[/red]: start one with `python -m {service.module}`, "
                  "or drop --no-start.")
        raise typer.Exit(2)
    parsed = httpx.URL(url)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, f"{service.env_prefix}PORT": str(parsed.port or service.default_port),
           f"{service.env_prefix}HOST": parsed.host, **(extra_env or {})}
    managed = Managed(service, log_path, env)
    managed.start()
    try:
        with console.status(f"Starting the {name} service on {url} (log: {log_path}) ..."):
            deadline = time.monotonic() + timeout_s
            while not healthy(url):
                if not managed.alive:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                    err.print(f"[red]The {name} service exited:[/red]\n" + "\n".join(tail))
                    raise typer.Exit(1)
                if time.monotonic() > deadline:
                    err.print(f"[red]The {name} service did not become healthy in {timeout_s:.0f} s; "
                              f"see {log_path}[/red]")
                    raise typer.Exit(1)
                time.sleep(0.2)
        yield True
    finally:
        managed.stop()


@contextlib.contextmanager
def llm_server(url: str, start: bool, log_path: Path, console: Console, err: Console) -> Iterator[None]:
    """The LLM server at `url`, started on the CPU defaults if none answers."""
    with ensure_service("llm", url, start, log_path, console, err):
        yield
