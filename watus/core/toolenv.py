"""The tool environment of `watus models setup`: the interpreter that runs the export tools.

Some steps need tools the run-time services must not carry (torch and ultralytics for the YOLO → ONNX
export: 1.6 GB). Those tools go into a separate venv (`<cache>/.toolenv`, made on first use with pip),
so the services' own environment never holds torch; or into an interpreter the user names
(`WATUS_MODELS_TOOL_PYTHON`, e.g. the Jetson's system Python with NVIDIA's torch). The tool
environment gets the union of the pip requirements of the steps that run.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from watus.core.modelcache import ModelStoreSettings, SetupError

log = logging.getLogger(__name__)

TOOL_ENV = ".toolenv"
_TOOL_MARKER = "watus-tool-requirements.json"


class NeedsTools(Protocol):
    """What the tool environment reads of a setup step: its pip requirements."""

    @property
    def tool_requirements(self) -> tuple[str, ...]: ...

    @property
    def tool_requirements_no_deps(self) -> tuple[str, ...]: ...


class ToolEnv:
    """The interpreter that runs export tools: a venv in the cache made on first use, or a given one."""

    def __init__(self, cache: Path, settings: ModelStoreSettings, steps: Sequence[NeedsTools], log_path: Path) -> None:
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
