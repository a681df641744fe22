"""Benchmarks of Watus' processes (`watus bench ...`) and what they all share.

Every benchmark describes the machine it ran on (a figure without its hardware is useless when the
robot and a laptop are compared) and writes its own section of one Markdown file, so the LLM, vision
and audio benchmarks can update `docs/benchmarks.md` independently without clobbering each other or
the prose around them.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import psutil

_MARKER = "<!-- bench:{name}:{edge} -->"
_NEW_FILE_HEADER = (
    "# Benchmarks\n\n"
    "Sections between `<!-- bench:... -->` markers are rewritten by `watus bench ...`; "
    "text outside them is kept.\n\n"
)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu_model() -> str:
    cpuinfo = _read_text("/proc/cpuinfo")
    for key in ("model name", "Model", "Hardware", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def _os_name() -> str:
    m = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', _read_text("/etc/os-release"), re.MULTILINE)
    name = m.group(1) if m else platform.system()
    return f"{name} (kernel {platform.release()})"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(packages: Iterable[str] = ("xllamacpp",)) -> dict[str, str]:
    """What the figures were measured on: board, CPU, cores, RAM, OS, JetPack, Python, packages."""
    from watus import __version__

    info: dict[str, str] = {}
    board = _read_text("/proc/device-tree/model").strip("\x00\n ")
    if board:
        info["board"] = board
    info["cpu"] = f"{_cpu_model()} ({platform.machine()})"
    physical = psutil.cpu_count(logical=False)
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 0
    info["cores"] = f"{logical} logical" + (f", {physical} physical" if physical else "")
    info["ram"] = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    info["os"] = _os_name()
    l4t = _read_text("/etc/nv_tegra_release").splitlines()
    if l4t:
        info["l4t"] = l4t[0].lstrip("# ").strip()
    info["python"] = f"{platform.python_version()} ({platform.python_implementation()})"
    info["watus"] = __version__
    for package in packages:
        info[package] = _version(package)
    return info


def update_markdown_section(path: Path, name: str, body: str) -> None:
    """Write `body` between `<!-- bench:<name>:start -->` and `...:end -->` in the file at `path`.

    Replaces the section where the markers exist, appends it otherwise, and creates the file (and its
    folder) if needed. Everything outside the markers is kept byte for byte.
    """
    start = _MARKER.format(name=name, edge="start")
    end = _MARKER.format(name=name, edge="end")
    block = f"{start}\n{body.strip()}\n{end}"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        i = text.find(start)
        j = text.find(end, i + len(start)) if i >= 0 else -1
        if i >= 0 and j >= 0:
            new = text[:i] + block + text[j + len(end):]
        elif text.strip():
            new = text.rstrip("\n") + "\n\n" + block + "\n"
        else:
            new = block + "\n"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = _NEW_FILE_HEADER + block + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
