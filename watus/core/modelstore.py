"""The model cache behind `watus models setup`: idempotent preparation steps with checksums.

No Watus process downloads or converts weights at run time: every model file a service opens lives
in one cache folder (`WATUS_MODELS_CACHE_DIR`), produced once by a *setup step*. A step declares the
files it makes (paths relative to the cache) and a recipe version; after it runs, the sha256 and size
of each output are written to `manifest.json`. A step counts as done while its manifest entry has the
same version and every output still has its recorded checksum, so `watus models setup` run twice does
nothing the second time, and a truncated or edited file is rebuilt.

Some steps need tools the run-time services must not carry (torch and ultralytics for the YOLO → ONNX
export: 1.6 GB). Those tools go into a separate *tool environment* (`<cache>/.toolenv`, a venv made
by setup with pip), so the services' own environment never holds torch; or into an interpreter the
user names (`WATUS_MODELS_TOOL_PYTHON`, e.g. the Jetson's system Python with NVIDIA's torch). A step
says which pip requirements it needs; the tool environment gets the union for the steps that run.

This module knows no service: each service declares its steps in its own `modelsetup` module
(`setup_steps() -> list[SetupStep]`), and the CLI (`watus.cli.models`, the top layer) collects them and
hands them to `run_setup`. For example the audio service's whisper join is one line there::

    SetupStep(name="audio.whisper-base", group="audio", version=1,
              description="Join the multilingual whisper base model.bin halves",
              outputs=("audio/whisper-base/model.bin", "audio/whisper-base/config.json", ...),
              run=lambda ctx: prepare_whisper_base(ctx.cache_dir))

"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from watus.core.config import WatusSettings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TOOL_ENV = ".toolenv"
_TOOL_MARKER = "watus-tool-requirements.json"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "watus" / "models"


class ModelStoreSettings(WatusSettings):
    """Where prepared models live and how setup gets its export tools (prefix `WATUS_MODELS_`)."""

    model_config = SettingsConfigDict(env_prefix="WATUS_MODELS_")

    cache_dir: Path = Field(default_factory=_default_cache_dir,
                            description="Folder of every prepared model file (default: "
                            "$XDG_CACHE_HOME/watus/models, else ~/.cache/watus/models).")
    tool_python: Path | None = Field(
        None, description="Python that already has the export tools (torch, ultralytics), e.g. the Jetson's "
        "system Python. Empty: setup makes its own tool venv in <cache>/.toolenv with pip.")
    pip_args: str = Field("", description="Extra arguments for the pip that fills the tool venv, e.g. "
                          "`--index-url https://download.pytorch.org/whl/cpu` to get CPU-only torch.")


def cache_dir() -> Path:
    """The configured cache folder (not created)."""
    return ModelStoreSettings().cache_dir.expanduser()


class SetupError(Exception):
    """A step failed; the message says what to do."""


@dataclass
class StepContext:
    """What a step's `run` gets: the cache folder and, on demand, the tool interpreter."""

    cache_dir: Path
    settings: ModelStoreSettings
    tool_env: ToolEnv
    log_path: Path

    def path(self, relative: str) -> Path:
        """An output path inside the cache (its folder is created)."""
        p = self.cache_dir / relative
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def tool_python(self) -> Path:
        """The interpreter with the tools of the running steps (made on first use)."""
        return self.tool_env.python()

    def run_tool(self, args: Sequence[str], *, env: dict[str, str] | None = None, timeout_s: float = 1800) -> str:
        """Run `<tool python> args...`; returns its stdout. Output is appended to the setup log."""
        return self.tool_env.run([str(self.tool_python()), *args], env=env, timeout_s=timeout_s)


@dataclass(frozen=True)
class SetupStep:
    """One idempotent preparation step."""

    name: str
    group: str
    description: str
    #: Files the step makes, relative to the cache folder.
    outputs: tuple[str, ...]
    run: Callable[[StepContext], None]
    #: Bump when the recipe changes: done steps of an older version run again.
    version: int = 1
    #: pip requirements the step needs in the tool environment (resolved together, one pip command).
    tool_requirements: tuple[str, ...] = ()
    #: Requirements installed with `--no-deps` (model packages whose own dependencies are not wanted).
    tool_requirements_no_deps: tuple[str, ...] = ()

    @property
    def needs_tools(self) -> bool:
        return bool(self.tool_requirements or self.tool_requirements_no_deps)


def select_steps(steps: Iterable[SetupStep], only: Sequence[str] = ()) -> list[SetupStep]:
    """Steps whose group or name is in `only` (all when empty). Raises SetupError for an unknown name."""
    steps = list(steps)
    if not only:
        return steps
    known = {s.name for s in steps} | {s.group for s in steps}
    unknown = [o for o in only if o not in known]
    if unknown:
        raise SetupError(f"unknown step or group: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return [s for s in steps if s.name in only or s.group in only]


# ----------------------------------------------------------------------------------------------------
# Checksums and the manifest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy so that `dst` is either absent or complete (a crash never leaves half a model)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".part", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; models are read by service users too
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def verify_file(path: Path, sha256: str, what: str) -> None:
    """Raise SetupError when the file's checksum is not the expected one."""
    actual = sha256_file(path)
    if actual != sha256:
        raise SetupError(f"{what} ({path}) has sha256 {actual}, expected {sha256}: the source package changed; "
                         "reinstall the pinned version or update the recipe")


def load_manifest(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads((cache / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"steps": {}}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), dict):
        return {"steps": {}}
    return data


def _save_manifest(cache: Path, manifest: dict[str, Any]) -> None:
    tmp = cache / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, cache / MANIFEST)


@dataclass(frozen=True)
class StepState:
    """Where one step stands: `ok`, `missing` (never ran or outputs gone), `changed` (checksum
    differs), `outdated` (older recipe version)."""

    step: SetupStep
    state: str
    detail: str = ""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state == "ok"


def step_state(step: SetupStep, cache: Path, manifest: dict[str, Any] | None = None,
               verify: bool = True) -> StepState:
    """Check a step against the manifest; with `verify`, re-hash its outputs."""
    manifest = manifest if manifest is not None else load_manifest(cache)
    entry = manifest["steps"].get(step.name)
    if not isinstance(entry, dict):
        return StepState(step, "missing", "not run yet")
    outputs = entry.get("outputs") or {}
    if entry.get("version") != step.version:
        return StepState(step, "outdated", f"recipe v{entry.get('version')} → v{step.version}", outputs)
    for rel in step.outputs:
        recorded = outputs.get(rel)
        path = cache / rel
        if recorded is None or not path.is_file():
            return StepState(step, "missing", f"{rel} is missing", outputs)
        if path.stat().st_size != recorded.get("bytes"):
            return StepState(step, "changed", f"{rel} has another size", outputs)
        if verify and sha256_file(path) != recorded.get("sha256"):
            return StepState(step, "changed", f"{rel} has another checksum", outputs)
    return StepState(step, "ok", "", outputs)


def expected_sha256(relative: str, cache: Path | None = None) -> str | None:
    """The checksum setup recorded for a cache file, or None (services may warn on a mismatch)."""
    cache = cache or cache_dir()
    for entry in load_manifest(cache)["steps"].values():
        rec = (entry.get("outputs") or {}).get(relative) if isinstance(entry, dict) else None
        if rec:
            return str(rec.get("sha256"))
    return None


# ----------------------------------------------------------------------------------------------------
# The tool environment


class ToolEnv:
    """The interpreter that runs export tools: a venv in the cache made on first use, or a given one."""

    def __init__(self, cache: Path, settings: ModelStoreSettings, steps: Sequence[SetupStep], log_path: Path) -> None:
        self.cache = cache
        self.settings = settings
        self.requirements = sorted({r for s in steps for r in s.tool_requirements})
        self.no_deps = sorted({r for s in steps for r in s.tool_requirements_no_deps})
        self.log_path = log_path
        self._python: Path | None = None

    @property
    def venv_dir(self) -> Path:
        return self.cache / TOOL_ENV

    @property
    def packages_dir(self) -> Path:
        """Where `--no-deps` packages go for a user-given interpreter (put on its PYTHONPATH)."""
        return self.cache / ".toolpkgs"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False",
               "YOLO_CONFIG_DIR": str(self.cache / ".yolo-config"), "PYTHONNOUSERSITE": "1",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        if self.settings.tool_python is not None and self.packages_dir.is_dir():
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.packages_dir), env.get("PYTHONPATH")) if p)
        return {**env, **(extra or {})}

    def run(self, cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout_s: float = 1800) -> str:
        """Run a command, appending its output to the setup log; SetupError with the tail on failure."""
        with open(self.log_path, "a", encoding="utf-8") as logf:
            logf.write(f"\n$ {shlex.join(cmd)}\n")
            logf.flush()
            try:
                proc = subprocess.run(cmd, env=self.env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired as e:
                raise SetupError(f"`{shlex.join(cmd[:4])} ...` ran over {timeout_s:.0f} s; see {self.log_path}") from e
            except OSError as e:
                raise SetupError(f"could not run {cmd[0]}: {e}") from e
            logf.write(proc.stdout)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-8:])
            raise SetupError(f"`{shlex.join(cmd[:4])} ...` failed ({proc.returncode}); see {self.log_path}:\n{tail}")
        return proc.stdout

    def python(self) -> Path:
        if self._python is None:
            self._python = self._given() if self.settings.tool_python is not None else self._venv()
        return self._python

    def _pip(self, python: Path) -> list[str]:
        return [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                *shlex.split(self.settings.pip_args)]

    def _given(self) -> Path:
        python = self.settings.tool_python
        assert python is not None
        python = python.expanduser()
        if not python.exists():
            raise SetupError(f"tool Python not found: {python} (WATUS_MODELS_TOOL_PYTHON)")
        check = "import torch, ultralytics"
        try:
            self.run([str(python), "-c", check])
        except SetupError as e:
            raise SetupError(f"{python} (WATUS_MODELS_TOOL_PYTHON) cannot `{check}`: install torch and ultralytics "
                             "there, or unset the setting to let setup make its own tool venv") from e
        if self.no_deps:
            # Into a folder of our own: the user's interpreter may not be ours to change.
            self.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                      "--upgrade", "--target", str(self.packages_dir), *self.no_deps])
        return python

    def _venv(self) -> Path:
        venv = self.venv_dir
        python = venv / "bin" / "python"
        marker = venv / _TOOL_MARKER
        try:
            have = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            have = {}
        want_req = sorted(set(have.get("requirements", [])) | set(self.requirements))
        want_nd = sorted(set(have.get("no_deps", [])) | set(self.no_deps))
        if python.exists() and have.get("requirements") == want_req and have.get("no_deps") == want_nd:
            return python
        if not python.exists():
            log.info("making the tool venv %s (once; torch and ultralytics for the exports)", venv)
            self.run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout_s=300)
        started = time.monotonic()
        if want_req:
            log.info("pip install %s", " ".join(want_req))
            self.run([*self._pip(python), *want_req])
        if want_nd:
            log.info("pip install --no-deps %s", " ".join(want_nd))
            self.run([*self._pip(python), "--no-deps", *want_nd])
        marker.write_text(json.dumps({"requirements": want_req, "no_deps": want_nd}), encoding="utf-8")
        log.info("tool venv ready in %.0f s", time.monotonic() - started)
        return python

    def remove(self) -> bool:
        """Delete the tool venv (1-2 GB); the next setup that needs it makes it again."""
        removed = False
        for d in (self.venv_dir, self.packages_dir):
            if d.exists():
                shutil.rmtree(d)
                removed = True
        return removed


# ----------------------------------------------------------------------------------------------------
# Running steps


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One setup at a time per cache (CI and a developer, or two terminals)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class StepResult:
    step: SetupStep
    #: `done` (ran now), `ok` (already done), `failed`.
    outcome: str
    seconds: float = 0.0
    error: str | None = None


#: Called before and after each step: (step, "start" | outcome, error or None).
ProgressFn = Callable[[SetupStep, str, str | None], None]


def run_setup(steps: Sequence[SetupStep], *, settings: ModelStoreSettings | None = None, force: bool = False,
              progress: ProgressFn | None = None) -> list[StepResult]:
    """Run every step not done yet (all with `force`); a failing step does not stop the others."""
    settings = settings or ModelStoreSettings()
    cache = settings.cache_dir.expanduser()
    results: list[StepResult] = []
    with _locked(cache):
        manifest = load_manifest(cache)
        pending = [s for s in steps if force or not step_state(s, cache, manifest).done]
        (cache / "logs").mkdir(exist_ok=True)
        log_path = cache / "logs" / "setup.log"
        tools = ToolEnv(cache, settings, [s for s in pending if s.needs_tools], log_path)
        ctx = StepContext(cache_dir=cache, settings=settings, tool_env=tools, log_path=log_path)
        for step in steps:
            if step not in pending:
                results.append(StepResult(step, "ok"))
                if progress:
                    progress(step, "ok", None)
                continue
            if progress:
                progress(step, "start", None)
            started = time.monotonic()
            try:
                step.run(ctx)
                missing = [rel for rel in step.outputs if not (cache / rel).is_file()]
                if missing:
                    raise SetupError(f"step {step.name} did not make {', '.join(missing)}")
            except SetupError as e:
                results.append(StepResult(step, "failed", time.monotonic() - started, str(e)))
            except Exception as e:  # a step's bug must not hide the other steps' results
                log.exception("step %s crashed", step.name)
                results.append(StepResult(step, "failed", time.monotonic() - started, f"{type(e).__name__}: {e}"))
            else:
                manifest["steps"][step.name] = {
                    "version": step.version,
                    "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "outputs": {rel: {"sha256": sha256_file(cache / rel), "bytes": (cache / rel).stat().st_size}
                                for rel in step.outputs},
                }
                _save_manifest(cache, manifest)
                results.append(StepResult(step, "done", time.monotonic() - started))
            if progress:
                last = results[-1]
                progress(step, last.outcome, last.error)
    return results
