"""The model cache folder: its settings, checksums and `manifest.json` (see `watus.core.modelstore`).

Every model file a service opens lives in one cache folder (`WATUS_MODELS_CACHE_DIR`). After a setup
step runs, the sha256 and size of each of its outputs are written to the manifest, so setup can tell
a done step from a truncated or edited file, and a service can check a file against its record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from watus.core.config import WatusSettings

MANIFEST = "manifest.json"


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


def save_manifest(cache: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically (a reader sees the old or the new one, never half)."""
    tmp = cache / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, cache / MANIFEST)


def expected_sha256(relative: str, cache: Path | None = None) -> str | None:
    """The checksum setup recorded for a cache file, or None (services may warn on a mismatch)."""
    cache = cache or cache_dir()
    for entry in load_manifest(cache)["steps"].values():
        rec = (entry.get("outputs") or {}).get(relative) if isinstance(entry, dict) else None
        if rec:
            return str(rec.get("sha256"))
    return None
