"""The one-way house: import-linter's contracts (pyproject.toml) hold, and they catch a broken layer."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

LINT = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("watus", "trt_server", "vision", "audio")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_tree_keeps_its_layers() -> None:
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


@pytest.mark.parametrize(("module", "line"), [
    ("audio/vad.py", "import vision.protocol"),  # a service importing another service
    ("trt_server/errors.py", "from watus.agent import voice"),  # a service importing the agent
    ("watus/core/timing.py", "import audio.pcm"),  # the foundation importing a service
    ("watus/agent/scene.py", "from watus.cli import ops"),  # the agent importing the CLI above it
])
def test_a_forbidden_import_breaks_the_contract(tmp_path: Path, module: str, line: str) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    r = _lint(tmp_path)
    assert r.returncode != 0 and "BROKEN" in r.stdout, r.stdout + r.stderr


def test_no_imports_by_string_in_the_foundation() -> None:
    """`watus.core` may not reach a service through importlib either (import-linter cannot see that)."""
    pattern = re.compile(r"import_module\(|__import__\(|spec_from_file_location\(")
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "watus" / "core").rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
